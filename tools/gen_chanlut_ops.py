#!/usr/bin/env python3
"""Vectors for PyTorch's per-channel elementwise quantized ops, exported as qfuse's
`channel_lut` (tests/data/chanlut, checked by tests/channel_lut.rs without Python):
quantized BatchNorm2d (quantized::batch_norm2d), BNReLU2d (batch_norm2d_relu) and
PReLU (quantized::prelu, per-channel or single weight), under the engines fbgemm,
qnnpack and x86.

Each case holds a random quint8 input (NCHW order; PyTorch held it channels-last in
half the cases, as a conv output is), PyTorch's output, the op's parameters, and the
per-channel tables the exporter writes (qfuse_export.exporter.torch_channel_tables:
PyTorch run on an input holding every byte in every channel). `ties` cases use
power-of-two scales and parameters that put many results exactly on halves.

    /work/venv/bin/python tools/gen_chanlut_ops.py tests/data/chanlut --seed 1
"""
import argparse
import json
import os
import random
import sys

import numpy as np
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from qfuse_export.exporter import torch_channel_tables  # noqa: E402

OPS = ["batch_norm2d", "batch_norm2d_relu", "prelu", "prelu_single"]
ENGINES = ["fbgemm", "qnnpack", "x86"]
CHANNELS = [1, 3, 8, 15, 16, 17, 31, 33, 63, 64, 70, 130]


def f32(v):
    return float(np.float32(v))


def make_case(rng, g, op, engine, i):
    ties = i % 4 == 3
    c = rng.choice(CHANNELS)
    n, h, w = rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 7)
    cl = i % 2 == 1
    s_in = 0.125 if ties else f32(rng.uniform(0.005, 0.1))
    z_in = rng.randint(0, 255)
    spec = {"op": op, "engine": engine, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_version": torch.__version__, "shape": [n, c, h, w], "input_scale": s_in,
            "input_zero_point": z_in, "ties": ties}
    tensors = {}
    if op.startswith("batch_norm2d"):
        m = (nniq.BNReLU2d if op.endswith("relu") else nnq.BatchNorm2d)(c)
        with torch.no_grad():
            m.weight.copy_(torch.empty(c).uniform_(-2, 2, generator=g))
            m.bias.copy_(torch.empty(c).uniform_(-1, 1, generator=g))
            m.running_mean.copy_(torch.empty(c).uniform_(-1, 1, generator=g))
            m.running_var.copy_(torch.empty(c).uniform_(0.1, 2, generator=g))
            if ties:  # alpha = 0.5 (or 1.5), beta a multiple of 0.5 in half the channels
                k = (c + 1) // 2
                m.running_var[:k] = 1.0
                m.weight[:k] = torch.tensor([0.5, 1.5, -0.5])[torch.arange(k) % 3]
                m.running_mean[:k] = 0.0
                m.bias[:k] = torch.tensor([0.0, 0.125, -0.375])[torch.arange(k) % 3]
        m.eps = 0.0 if ties else 1e-5
        s_out = 0.125 if ties else f32(rng.uniform(0.005, 0.1))
        m.scale = torch.tensor(s_out)
        m.zero_point = torch.tensor(rng.randint(0, 255))
        for k in ("weight", "bias"):
            tensors[k] = getattr(m, k).detach().numpy().astype(np.float32)
        tensors["mean"] = m.running_mean.numpy().astype(np.float32)
        tensors["var"] = m.running_var.numpy().astype(np.float32)
        spec["eps"] = m.eps
    else:
        cw = 1 if op == "prelu_single" else c
        s_out = 0.25 if ties else f32(rng.uniform(0.005, 0.1))
        m = nnq.PReLU(s_out, rng.randint(0, 255), cw)
        ws = 0.0625 if ties else f32(rng.uniform(0.002, 0.02))
        wz = rng.randint(0, 255)
        qw = torch.randint(0, 256, (cw,), generator=g, dtype=torch.uint8)
        m.weight = torch._make_per_tensor_quantized_tensor(qw, ws, wz)
        tensors["weight_q"] = qw.numpy()
        spec["weight_scale"], spec["weight_zero_point"] = ws, wz
    spec["output_scale"], spec["output_zero_point"] = float(m.scale), int(m.zero_point)
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
        qx = torch._make_per_tensor_quantized_tensor(x, s_in, z_in)
        if cl:
            qx = qx.contiguous(memory_format=torch.channels_last)
            spec["input_layout"] = "channels_last"
        with torch.no_grad():
            y = m(qx)
    finally:
        torch.backends.quantized.engine = prev
    assert (float(y.q_scale()), int(y.q_zero_point())) == (spec["output_scale"], spec["output_zero_point"])
    tables, s, z = torch_channel_tables(m, c, 4, s_in, z_in, engine)
    assert (s, z) == (spec["output_scale"], spec["output_zero_point"])
    tensors["input"] = x.numpy()
    tensors["output"] = y.int_repr().contiguous().numpy()
    tensors["tables"] = np.asarray(tables, dtype=np.uint8).reshape(c, 256)
    return spec, tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count-per-op", type=int, default=4, help="cases per op per engine")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    total = 0
    for op in OPS:
        rng = random.Random(f"{a.seed}-{op}")
        g = torch.Generator().manual_seed(a.seed * 1000 + OPS.index(op))
        for i in range(a.count_per_op * len(ENGINES)):
            engine = ENGINES[i % len(ENGINES)]
            spec, tensors = make_case(rng, g, op, engine, i)
            name = f"{op}_{a.seed}_{i:03d}"
            spec["name"] = name
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                      os.path.join(a.out, name + ".safetensors"),
                      metadata={"case": json.dumps(spec, sort_keys=True)})
            total += 1
    print(f"wrote {total} cases to {a.out}")


if __name__ == "__main__":
    main()
