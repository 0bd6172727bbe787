#!/usr/bin/env python3
"""Makes the PyTorch quantized bilinear upsampling vectors of tests/data/upsample (checked by
tests/torch_upsample.rs; CI never runs Python):

    /work/venv/bin/python tools/gen_torch_upsample.py tests/data/upsample --seed 1

F.interpolate(mode='bilinear') on a per-tensor quantized tensor (quint8 and qint8) under the
engines fbgemm, x86 and qnnpack (cases alternate; the kernels are ATen's), NCHW-contiguous and
channels-last inputs, align_corners both ways, scale factors (odd ones, downscaling) and sizes,
channel counts on both sides of ATen's 8-lane vector body (1, 3, 5, 8, 13, 16, 20). Every
output is checked here against the rules of tools/torch_upsample_rules.py (plus: a contiguous
input whose output size equals its size is copied). Needs torch, numpy, safetensors.

Each file: tensors `input` (u8 NCHW, qint8 as its uint8 image v + 128), `output` (PyTorch's,
same form), `scales` (f32 [2]: ATen's per-axis scale, area_pixel_compute_scale<float>);
metadata `case` (JSON): engine, shape [N, C, H, W], size [OH, OW], dtype, scale,
zero_point (the true zero point), align_corners, scale_factor ([h, w] or null), layout
("channels_last" / "contiguous"), lanes (8), cpu_capability, torch_version.
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
import torch_upsample_rules as R  # noqa: E402

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    chans = [3, 8, 13, 16, 20, 1, 5, 24]
    engines = ["fbgemm", "x86", "qnnpack"]
    n = 0
    for i in range(48):
        eng = engines[i % 3]
        torch.backends.quantized.engine = eng
        C = chans[i % len(chans)]
        cl = bool((i // 2) % 2)
        ac = bool(i % 2)
        signed = i % 7 == 3
        H, W = (int(v) for v in rng.integers(2, 8, 2))
        if i % 3 != 2:
            sf = [float(rng.choice([1.5, 2.0, 2.5, 3.0, 1.7, 0.6, 1.3, 3.3])) for _ in range(2)]
            kw = dict(scale_factor=tuple(sf))
        else:
            sf = None
            kw = dict(size=(int(rng.integers(1, 17)), int(rng.integers(1, 17))))
        if i == 4:  # same size with a scale factor != 1 (the contiguous copy, the NHWC formula)
            H, W, sf = 3, 3, [1.3, 1.3]
            kw = dict(scale_factor=tuple(sf))
        if signed:
            x = rng.integers(-128, 128, (2, C, H, W)).astype(np.int8)
            zp = int(rng.integers(-128, 128))
            img = (x.astype(np.int16) + 128).astype(np.uint8)
            lo, hi, off = -128, 127, 128
        else:
            x = rng.integers(0, 256, (2, C, H, W)).astype(np.uint8)
            zp = int(rng.integers(0, 256))
            img = x
            lo, hi, off = 0, 255, 0
        scale = float(rng.choice([0.05, 0.013, 0.5]))
        q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), scale, zp)
        if cl:
            q = q.contiguous(memory_format=torch.channels_last)
        layout = "channels_last" if q.is_contiguous(memory_format=torch.channels_last) else "contiguous"
        y = F.interpolate(q, mode="bilinear", align_corners=ac, **kw)
        assert y.q_scale() == scale and y.q_zero_point() == zp
        yv = y.int_repr().contiguous().numpy().astype(np.int64)
        OH, OW = yv.shape[2:]
        # the rules (true values; the tool's bilinear saturates to [0, 255]: redo it for qint8)
        if layout == "contiguous" and (OH, OW) == (H, W):
            r = x.astype(np.int64)
        else:
            r = rules(x.astype(np.int64), zp, OH, OW, ac, sf, layout == "channels_last", lo, hi)
        bad = int((r != yv).sum())
        if bad:
            sys.exit(f"case {i}: {bad} outputs differ from the rules")
        scales = np.array([R.axis_scale(H, OH, ac, sf[0] if sf else None),
                           R.axis_scale(W, OW, ac, sf[1] if sf else None)], np.float32)
        spec = dict(engine=eng, shape=[2, C, H, W], size=[int(OH), int(OW)],
                    dtype="qint8" if signed else "quint8", scale=scale, zero_point=zp,
                    align_corners=ac, scale_factor=sf, layout=layout, lanes=8,
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    torch_version=torch.__version__)
        name = f"bilinear_{i:03d}"
        save_file({"input": np.ascontiguousarray(img),
                   "output": (yv + off).astype(np.uint8),
                   "scales": scales},
                  os.path.join(a.out, name + ".safetensors"),
                  metadata={"case": json.dumps(spec, sort_keys=True)})
        n += 1
    print(f"{n} cases written to {a.out}")


def rules(x, zp, oh, ow, ac, sf, cl, lo, hi):
    """tools/torch_upsample_rules.py's bilinear with per-axis scale factors and the type's
    saturation range (true values)."""
    f32 = np.float32
    n_, c_, H, W = x.shape
    th = R.taps(H, oh, ac, sf[0] if sf else None, cl)
    tw = R.taps(W, ow, ac, sf[1] if sf else None, cl)
    out = np.zeros((n_, c_, oh, ow), np.int64)
    vec = 8 * (c_ // 8) if cl else 0
    for n in range(n_):
        for c in range(c_):
            for a_, (h1, hp, h0l, h1l) in enumerate(th):
                for b, (w1, wp, w0l, w1l) in enumerate(tw):
                    p00, p01 = f32(x[n, c, h1, w1]), f32(x[n, c, h1, w1 + wp])
                    p10, p11 = f32(x[n, c, h1 + hp, w1]), f32(x[n, c, h1 + hp, w1 + wp])
                    if not cl:
                        A = f32(f32(w0l * p00) + f32(w1l * p01))
                        B = f32(f32(w0l * p10) + f32(w1l * p11))
                        r = f32(f32(h0l * A) + f32(h1l * B))
                    elif c < vec:
                        A = R.fma(w1l, p01, f32(w0l * p00))
                        B = R.fma(w1l, p11, f32(w0l * p10))
                        r = R.fma(h1l, B, f32(h0l * A))
                    else:
                        A = R.fma(w0l, p00, f32(w1l * p01))
                        B = R.fma(w0l, p10, f32(w1l * p11))
                        r = R.fma(h0l, A, f32(h1l * B))
                    r = f32(r - f32(zp))
                    out[n, c, a_, b] = min(hi, max(lo, int(np.rint(r)) + zp))
    return out


if __name__ == "__main__":
    main()
