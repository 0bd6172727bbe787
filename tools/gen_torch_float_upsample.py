#!/usr/bin/env python3
"""Makes the vectors of FX's float bilinear upsampling between a dequantize and a quantize
(`resize` mode `torch_bilinear_float`): tests/data/upsample/float_*.safetensors, checked by
tests/torch_upsample.rs (CI never runs Python):

    /work/venv/bin/python tools/gen_torch_float_upsample.py tests/data/upsample --seed 1

Each case runs exactly what a convert_fx model runs for an nn.Upsample(mode='bilinear')
module: q.dequantize() -> F.interpolate(mode='bilinear', float) -> torch.quantize_per_tensor
to the next quantize's qparams, under the engines fbgemm, x86, qnnpack in turn (the kernels
are ATen's, the same for each engine); quint8 (every seventh input qint8, output quint8);
contiguous and channels-last inputs; align_corners both ways; scale factors and sizes; small
outputs (OH + OW <= 128: ATen's channels-last kernel for any layout) and large ones (the
generic kernel for a contiguous input or C <= 3); C in 1, 3, 8, 13, 16, 20; one C == 3 case
under one thread (ATen then takes the channels-last kernel). Every output byte is checked here
against the rules of tools/torch_float_upsample_rules.py. Needs torch, numpy, safetensors.

Each file: tensors `input` (u8 NCHW; qint8 as its uint8 image v + 128), `output` (u8 NCHW,
PyTorch's), `scales` (f32 [2], ATen's per-axis scale); metadata `case` (JSON): engine, shape,
size, dtype, scale, zero_point (true), out_scale, out_zero_point, align_corners,
scale_factor ([h, w] or null), layout (the input's), kernel ("channels_last": ATen's
channels-last kernel, "contiguous": the generic kernel), lanes (8), threads, cpu_capability,
torch_version.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_float_upsample_rules as R  # noqa: E402

warnings.filterwarnings("ignore")
f32 = np.float32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    chans = [3, 8, 13, 16, 20, 1]
    engines = ["fbgemm", "x86", "qnnpack"]
    threads0 = torch.get_num_threads()
    n = 0
    for i in range(36):
        eng = engines[i % 3]
        torch.backends.quantized.engine = eng
        C = chans[i % len(chans)]
        cl = bool((i // 2) % 2)
        ac = bool(i % 2)
        signed = i % 7 == 3
        big = i % 5 == 4
        if big and i % 10 == 4:
            cl = False  # the generic kernel
        one_thread = i == 35
        if one_thread:
            C, cl, big = 3, False, True
        torch.set_num_threads(1 if one_thread else threads0)
        H, W = (int(v) for v in rng.integers(2, 9, 2))
        if i % 3 != 2:
            pool = [9.0, 10.5, 12.0] if big else [1.5, 2.0, 2.5, 3.0, 1.7, 0.6, 1.3, 3.3]
            sf = [float(rng.choice(pool)) for _ in range(2)]
            kw = dict(scale_factor=tuple(sf))
        else:
            sf = None
            lo, hi = (66, 90) if big else (1, 17)
            kw = dict(size=(int(rng.integers(lo, hi)), int(rng.integers(lo, hi))))
        if signed:
            x = rng.integers(-128, 128, (2, C, H, W)).astype(np.int8)
            zp = int(rng.integers(-128, 128))
            img = (x.astype(np.int16) + 128).astype(np.uint8)
        else:
            x = rng.integers(0, 256, (2, C, H, W)).astype(np.uint8)
            zp = int(rng.integers(0, 256))
            img = x
        scale = float(rng.choice([0.05, 0.013, 0.5, 0.0173]))
        out_scale = float(f32(rng.choice([0.05, 0.021, 0.3, 0.0117])))
        out_zp = int(rng.integers(0, 256))
        q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), scale, zp)
        if cl:
            q = q.contiguous(memory_format=torch.channels_last)
        xf = q.dequantize()
        layout = "channels_last" if xf.is_contiguous(memory_format=torch.channels_last) else "contiguous"
        y = F.interpolate(xf, mode="bilinear", align_corners=ac, **kw)
        yq = torch.quantize_per_tensor(y, out_scale, out_zp, torch.quint8)
        yv = yq.int_repr().contiguous().numpy().astype(np.int64)
        OH, OW = yv.shape[2:]
        use_cl = (layout == "channels_last" and C > 3) or OH + OW <= 128 or (
            torch.get_num_threads() == 1 and C == 3)
        r = rules(xf.contiguous().numpy(), OH, OW, ac, sf, use_cl, out_scale, out_zp)
        bad = int((r != yv).sum())
        if bad:
            sys.exit(f"case {i}: {bad} outputs differ from the rules")
        scales = np.array([R.axis_scale(H, OH, ac, sf[0] if sf else None),
                           R.axis_scale(W, OW, ac, sf[1] if sf else None)], np.float32)
        spec = dict(engine=eng, shape=[2, C, H, W], size=[int(OH), int(OW)],
                    dtype="qint8" if signed else "quint8", scale=scale, zero_point=zp,
                    out_scale=out_scale, out_zero_point=out_zp, align_corners=ac,
                    scale_factor=sf, layout=layout,
                    kernel="channels_last" if use_cl else "contiguous", lanes=8,
                    threads=torch.get_num_threads(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    torch_version=torch.__version__)
        name = f"float_{i:03d}"
        save_file({"input": np.ascontiguousarray(img), "output": yv.astype(np.uint8),
                   "scales": scales},
                  os.path.join(a.out, name + ".safetensors"),
                  metadata={"case": json.dumps(spec, sort_keys=True)})
        n += 1
    torch.set_num_threads(threads0)
    print(f"{n} cases written to {a.out}")


def rules(x, oh, ow, ac, sf, use_cl, out_scale, out_zp):
    """tools/torch_float_upsample_rules.py with per-axis scale factors, then the quantize."""
    H, W = x.shape[2:]
    th = R.taps(H, oh, ac, sf[0] if sf else None, use_cl)
    tw = R.taps(W, ow, ac, sf[1] if sf else None, use_cl)
    if use_cl:
        v = 8 * (x.shape[1] // 8)
        r = R.channels_last(x, th, tw, R.CL_VEC[R.RULE_VEC])
        r[:, v:] = R.channels_last(x, th, tw, R.CL_TAIL[R.RULE_TAIL])[:, v:]
    else:
        r = R.generic(x, th, tw, *R.RULE_GENERIC)
    inv = f32(f32(1) / f32(out_scale))
    return np.clip(np.rint(R.mul(r, inv)).astype(np.int64) + out_zp, 0, 255)


if __name__ == "__main__":
    main()
