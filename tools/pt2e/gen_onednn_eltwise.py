#!/usr/bin/env python3
"""Records oneDNN's int8 conv with an eltwise post-op as Inductor calls it for
X86InductorQuantizer graphs: `conv -> hardswish -> q` becomes
torch.ops.onednn.qconv_pointwise.tensor(..., out_dtype, 'hardswish', [None], '') (read in the code
Inductor generates for torchvision mobilenet_v3_small: tests/data/pt2e/README.md), `conv -> silu`
the 'swish' post-op. Direct calls of that op (what the generated code calls), u8 output (oneDNN
quantizes) and f32 output (scale 1.0, zero point 0: the post-op's f32 value itself, which pins the
eltwise arithmetic bit for bit). Pre-activation values spread over [-6, 6] (hardswish's bends
at -3 and 3, swish's exp range). For tests/pt2e_inductor.rs (no Python in CI).

Usage: python3 tools/pt2e/gen_onednn_eltwise.py OUT   (writes OUT/<case>/{case.json, x_u8.npy,
    weight_q.npy, weight_scale.npy, bias.npy, output_u8.npy | output_f32.npy}; this CPU: x86-64
    with AVX-512 VNNI)
"""
import json, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

F32, F64, I64 = np.float32, np.float64, np.int64


def conv_v(acc, si, ws, b):
    """oneDNN's f32 value before the post-op (tests/data/pt2e/README.md)"""
    return ((((acc.astype(F32) * F32(si)).astype(F32) * ws[None, :, None, None]).astype(F32))
            + b[None, :, None, None]).astype(F32)


def layer(rng, post, out_f32, k=1, groups=1):
    C, O, H = (16, 64, 16) if groups == 1 else (groups, groups, 16)
    si = F32(10 ** rng.uniform(-2.5, -1.5))
    zi = int(rng.integers(0, 40))
    wq = rng.integers(-128, 128, (O, C // groups, k, k)).astype(np.int8)
    xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
    acc = np.einsum("ockl,nchw->nohw", wq.astype(I64), xq.astype(I64) - zi) if k == 1 else None
    if k != 1:
        xp = np.pad(xq.astype(I64) - zi, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        acc = np.zeros((1, O, H, H), dtype=I64)
        for dy in range(k):
            for dx in range(k):
                if groups == 1:
                    acc += np.einsum("oc,nchw->nohw", wq[:, :, dy, dx].astype(I64), xp[:, :, dy:dy + H, dx:dx + H])
                else:  # depthwise
                    acc += wq[None, :, 0, dy, dx, None, None].astype(I64) * xp[:, :, dy:dy + H, dx:dx + H]
    # weight scales so that each channel's products spread over about [-4, 4], biases in [-2, 2]
    std = acc.reshape(O, -1).std(axis=1) + 1
    ws = (F32(3.0) / (std.astype(F32) * si)).astype(F32)
    b = rng.uniform(-2, 2, O).astype(F32)
    pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), torch.from_numpy(ws), float(si), zi, [1, 1],
                                        [k // 2, k // 2], [1, 1], groups, list(xq.shape))
    xt = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
    if out_f32:
        so, zo, dt = 1.0, 0, torch.float32
    else:
        v = conv_v(acc, si, ws, b)
        so, zo, dt = float(F32(np.ptp(v) / 200)), int(rng.integers(20, 120)), torch.uint8
    y = torch.ops.onednn.qconv_pointwise.tensor(
        xt, torch.tensor(float(si)), torch.tensor(zi, dtype=torch.int32), pw, torch.from_numpy(ws),
        torch.zeros(O, dtype=torch.int32), torch.from_numpy(b), [1, 1], [k // 2, k // 2], [1, 1], groups, so, zo,
        dt, post, [None], "")
    y = y.contiguous().numpy()
    return dict(si=si, zi=zi, ws=ws, wq=wq, b=b, xq=xq, so=F32(so), zo=zo, y=y, acc=acc, k=k, groups=groups)


def tie_bias(post, T, pj, q, strict=False):
    """a bias putting the pre-activation value pj + bias on a v with oneDNN's post-op value
    exactly T, where another candidate quantizes differently (None if there is none)"""
    from check_onednn_eltwise import hardswish_onednn, hardswish_fma, hardswish_torch
    from check_onednn_eltwise import swish_onednn, swish_exact, swish_torch, swish_split_fma, swish_recip
    if post == "hardswish":
        root = F32((-3 + np.sqrt(9 + 24 * float(T))) / 2)
        cand = (root.view(np.int32) + np.arange(-20000, 20001, dtype=np.int32)).view(F32)
        ok = hardswish_onednn(cand) == T
        alt = (q(hardswish_fma(cand)) != q(T)) | (q(hardswish_torch(cand)) != q(T))
    else:
        # x * sigmoid(x) = T by Newton's method (T > 0: one root; T < 0: the one below the
        # minimum at -1.278, where exp's rounding reaches the value undamped)
        x = float(T) + 1.0 if T > 0 else -1.3 + 40 * float(T)
        for _ in range(60):
            sg = 1 / (1 + np.exp(-x))
            x -= (x * sg - float(T)) / (sg + x * sg * (1 - sg))
        cand = (F32(x).view(np.int32) + np.arange(-20000, 20001, dtype=np.int32)).view(F32)
        ok = swish_onednn(cand) == T
        alt = np.zeros(cand.shape, dtype=bool)
        for fn in ((swish_split_fma,) if strict else (swish_exact, swish_torch, swish_split_fma, swish_recip)):
            alt |= q(fn(cand)) != q(T)
    for v in cand[ok & alt]:
        bo = F32(F64(v) - F64(pj))
        if F32(pj + bo) == v:
            return bo
    return None


def tie_layer(rng, post="hardswish"):
    """hardswish, u8 output, output scale 2^-6 and zero point 0: each output channel's bias puts
    one pixel's oneDNN hardswish value on an exact .5 tie of e * (1/so) (broken to even), where
    the FMA form or PyTorch's x * clamp(x + 3, 0, 6) / 6 lands one ulp off and rounds the other
    way (check_onednn_eltwise.py's candidates). post "swish": the same with oneDNN's swish value,
    where the correctly rounded silu, f32(x * sigmoid(x)), oneDNN's formula with its fma split
    in two roundings or with the division as a reciprocal's product rounds the other way."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    C, O, H = 16, 64, 16
    si = F32(10 ** rng.uniform(-2.5, -1.5))
    zi = int(rng.integers(0, 40))
    wq = rng.integers(-128, 128, (O, C, 1, 1)).astype(np.int8)
    xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
    acc = np.einsum("oc,nchw->nohw", wq[:, :, 0, 0].astype(I64), xq.astype(I64) - zi)
    std = acc.reshape(O, -1).std(axis=1) + 1
    ws = (F32(1.0) / (std.astype(F32) * si)).astype(F32)
    p = conv_v(acc, si, ws, np.zeros(O, dtype=F32))
    # swish: zero point 20, so that negative values (down to -0.278) have ties too
    so, zo = F32(2.0 ** -6), 0 if post == "hardswish" else 20
    inv = F32(1) / so
    q = lambda e: np.clip(np.rint(f32(f32(e * inv) + F32(zo))), 0, 255)
    b = np.zeros(O, dtype=F32)
    placed = 0
    for o in range(O):
        pv = p[0, o].ravel()
        near = np.flatnonzero(np.abs(pv) < 1)
        j = int(near[0]) if near.size else int(np.argmin(np.abs(pv)))
        # hardswish: one target per channel; swish (steeper, about one candidate per target hits
        # it exactly): up to 60 targets until one separates, first one that separates the
        # split fma (rarer), else any
        ks = rng.integers(20, 150, 1) if post == "hardswish" else rng.integers(-17, 150, 60)
        for strict in ((False,) if post == "hardswish" else (True, False)):
            for k in ks:
                bo = tie_bias(post, F32((int(k) + 0.5) * float(so)), pv[j], q, strict)
                if bo is not None:
                    break
            if bo is not None:
                b[o] = bo
                placed += 1
                break
    print(f"  ties placed on {placed} of {O} channels")
    pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), torch.from_numpy(ws), float(si), zi, [1, 1],
                                        [0, 0], [1, 1], 1, list(xq.shape))
    xt = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
    y = torch.ops.onednn.qconv_pointwise.tensor(
        xt, torch.tensor(float(si)), torch.tensor(zi, dtype=torch.int32), pw, torch.from_numpy(ws),
        torch.zeros(O, dtype=torch.int32), torch.from_numpy(b), [1, 1], [0, 0], [1, 1], 1, float(so), zo,
        torch.uint8, post, [None], "")
    return dict(si=si, zi=zi, ws=ws, wq=wq, b=b, xq=xq, so=so, zo=zo, y=y.contiguous().numpy(), acc=acc, k=1,
                groups=1)


def f32(v):
    return np.asarray(v, dtype=F32)


CASES = [("hardswish_f32", "hardswish", True, 1), ("hardswish_u8", "hardswish", False, 1),
         ("hardswish3x3_u8", "hardswish", False, 3),
         ("hardswish_tie_u8", "hardswish", False, "tie"),
         ("swish_f32", "swish", True, 1), ("swish_u8", "swish", False, 1),
         ("swish_tie_u8", "swish", False, "tie"), ("swish_dw5x5_u8", "swish", False, "dw5")]


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(11)
    for name, post, out_f32, k in CASES:
        if k == "tie":
            L = tie_layer(rng, post)
        elif k == "dw5":  # depthwise 5x5 (efficientnet's), 32 channels
            L = layer(rng, post, out_f32, 5, groups=32)
        else:
            L = layer(rng, post, out_f32, k)
        k = L["k"]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for key, f in (("xq", "x_u8"), ("wq", "weight_q"), ("ws", "weight_scale"), ("b", "bias")):
            np.save(os.path.join(d, f + ".npy"), L[key])
        if out_f32:
            np.save(os.path.join(d, "output_f32.npy"), L["y"].astype(F32))
        else:
            np.save(os.path.join(d, "output_u8.npy"), L["y"].astype(np.uint8))
        case = dict(name=name, op=f"onednn.qconv_pointwise.tensor, post-op {post!r}", post_op=post,
                    stride=[1, 1], padding=[k // 2, k // 2], dilation=[1, 1], groups=L["groups"],
                    input=dict(scale=float(L["si"]), zero_point=L["zi"]),
                    output=dict(dtype="float32" if out_f32 else "uint8", scale=float(L["so"]),
                                zero_point=L["zo"]),
                    torch=torch.__version__, onednn="3.13.3 (b38f97eb, as bundled)",
                    cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu="x86-64 with AVX-512 VNNI")
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(name, L["y"].shape)


if __name__ == "__main__":
    main()
