#!/usr/bin/env python3
"""Float regions of X86InductorQuantizer models (engine "inductor_x86"): small models whose
quantizes read float values that Inductor's C++ moves, max-pools, normalizes or averages
(tests/data/pt2e/README.md, "Inductor x86 graphs": float regions, batch norm, table_mean).
Each is quantized (prepare_pt2e, calibration, convert_pt2e), compiled by torch.compile
(Inductor, freezing; tools/pt2e/inductor_oracle.py), exported with `qfuse_export.export`, run
with `qfuse run` on the CPU (`--cpu`) and the GPU and compared bit for bit. --save DIR writes
DIR/<case>/{model.safetensors,input.npy,output.npy,case.json}, the vectors
tests/pt2e_inductor_float.rs reads (default tests/data/pt2e/inductor_x86_float).

  shuffle_blocks     torchvision ShuffleNetV2 blocks: cat of a dequantized half and a conv's f32
                     relu output, channel shuffle (view, transpose, contiguous, view), chunk
  inception_pools    torchvision GoogLeNet Inception blocks: cat of f32 conv outputs, a float
                     max pool of it (3x3 / 2, ceil_mode) and a max pool of a max pool
  dense_5x6          torchvision DenseNet (one block of 2 layers): dq -> batch_norm -> relu -> q
                     (channel_lut), the tail norm5 -> relu -> adaptive_avg_pool2d(1) -> flatten
                     -> q (table_mean over 5x6 pixels) -> linear
  dense_9x7          the same, 9x7 pixels averaged, other statistics

Usage: python3 tools/pt2e/gen_inductor_float.py [--qfuse PATH] [--only a,b] [--no-gpu] [--save [DIR]]
           [--mutate bn_fused|bn_mul_order]
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
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
import qfuse_export  # noqa: E402
from inductor_oracle import compiled_output  # noqa: E402
from test_inductor_export import Fn, compare, conv, qfuse_run, quantize  # noqa: E402


def random_bn(m, seed):
    """BatchNorm statistics that are not the identity (as the torchvision matrix)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(c, generator=g) * 0.8 + 0.4)
                mod.weight.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.3)
    return m


def shuffle_blocks():
    from torchvision.models.shufflenetv2 import InvertedResidual

    return Fn(lambda s, x: F.max_pool2d(s.c(s.b3(s.b2(s.b1(s.stem(x))))), 1),
              stem=nn.Sequential(conv(3, 16, 3, padding=1), nn.ReLU()),
              b1=InvertedResidual(16, 32, 2), b2=InvertedResidual(32, 32, 1), b3=InvertedResidual(32, 32, 1),
              c=conv(32, 8, 1))


def inception_pools():
    from torchvision.models.googlenet import Inception

    def f(s, x):
        h = F.max_pool2d(s.stem(x), 3, 2, ceil_mode=True)
        h = F.max_pool2d(s.i1(h), 3, 2, ceil_mode=True)
        return F.max_pool2d(s.c(s.i2(h)), 1)

    return Fn(f, stem=nn.Sequential(conv(3, 16, 3, padding=1), nn.ReLU()),
              i1=Inception(16, 8, 8, 16, 4, 8, 8), i2=Inception(40, 16, 8, 16, 4, 8, 8), c=conv(48, 8, 1))


def dense():
    import torchvision

    return torchvision.models.densenet.DenseNet(growth_rate=8, block_config=(2,), num_init_features=16,
                                                bn_size=2, num_classes=10)


# name -> (builder, input shape, seed)
CASES = {
    "shuffle_blocks": (shuffle_blocks, (2, 3, 12, 12), 41),
    "inception_pools": (inception_pools, (1, 3, 21, 21), 42),
    "dense_5x6": (dense, (1, 3, 20, 24), 43),
    "dense_9x7": (dense, (2, 3, 36, 28), 44),
}


def mutate(rule):
    """swap one rule of the exporter for a plausible wrong one (the recorded cases must then fail)"""
    from qfuse_export import pt2e_inductor as PI

    orig = PI.float_chain_values
    if rule == "bn_fused":
        # batch norm as one scale and shift: x * f32(invstd * w) + f32(b - mean * f32(invstd * w))
        def values(s_in, z_in, fns=(), channels=None):
            out = []
            for f in fns:
                if f[0] == "bn":
                    mean, invstd, w, b = (np.asarray(v, dtype=np.float32) for v in f[1:])
                    a = (invstd * w).astype(np.float32)
                    sh = (b - (mean * a).astype(np.float32)).astype(np.float32)
                    out.append(("affine", a, sh))
                else:
                    out.append(f)
            x = orig(s_in, z_in, (), channels=channels if channels else
                     next((len(f[1]) for f in fns if f[0] == "bn"), None))
            for f in out:
                if f[0] == "affine":
                    x = ((x * f[1][:, None]).astype(np.float32) + f[2][:, None]).astype(np.float32)
                else:
                    x = orig.__wrapped_clamp__(x, f) if hasattr(orig, "__wrapped_clamp__") else \
                        np.minimum(np.maximum(x, np.float32(f[1])), np.float32(f[2])) if f[2] != np.inf else \
                        np.maximum(x, np.float32(f[1]))
            return x
    elif rule == "bn_mul_order":
        # batch norm as (x - mean) * f32(invstd * w) + b
        def values(s_in, z_in, fns=(), channels=None):
            fns2 = []
            for f in fns:
                if f[0] == "bn":
                    mean, invstd, w, b = (np.asarray(v, dtype=np.float32) for v in f[1:])
                    fns2.append(("bn", mean, (invstd * w).astype(np.float32), np.ones_like(w), b))
                else:
                    fns2.append(f)
            return orig(s_in, z_in, tuple(fns2), channels)
    else:
        raise SystemExit(f"unknown --mutate {rule!r} (bn_fused, bn_mul_order)")
    PI.float_chain_values = values


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qfuse", default=os.path.join(tgt, "release", "qfuse"))
    ap.add_argument("--only", default="")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--save", nargs="?", const=os.path.join(ROOT, "tests/data/pt2e/inductor_x86_float"), default="")
    ap.add_argument("--mutate", default="", help="bn_fused | bn_mul_order: a wrong rule (cases must fail)")
    a = ap.parse_args()
    if a.mutate:
        mutate(a.mutate)
    only = set(a.only.split(",")) if a.only else None
    npass = nfail = 0
    work = tempfile.mkdtemp(prefix="qfuse_indfloat_")
    devs = ["cpu"] + ([] if a.no_gpu else ["gpu"])
    for name, (build, shape, seed) in CASES.items():
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        model = random_bn(build().eval(), seed)
        cm, x = quantize(model, shape, seed, False)
        ref = compiled_output(cm, x)
        mp = os.path.join(work, f"{name}.safetensors")
        h = qfuse_export.export(cm, x, mp)
        ops = sorted({n["op"] if n["op"] != "host_float" else f"host_float {n['fn']}" for n in h["nodes"]})
        xp = os.path.join(work, f"{name}_x.npy")
        np.save(xp, x.numpy())
        for dev in devs:
            got, err = qfuse_run(a.qfuse, mp, xp, os.path.join(work, f"{name}_{dev}.npy"), dev == "cpu")
            msg = f"qfuse run: {err}" if err else compare(got, ref)
            if msg:
                print(f"FAIL {name} [{dev}]: {msg}")
                nfail += 1
            else:
                print(f"ok   {name} [{dev}]: {ref.size} outputs bit-exact with torch.compile "
                      f"({len(h['nodes'])} nodes: {', '.join(ops)})")
                npass += 1
        if a.save:
            d = os.path.join(a.save, name)
            os.makedirs(d, exist_ok=True)
            shutil.copy(mp, os.path.join(d, "model.safetensors"))
            np.save(os.path.join(d, "input.npy"), x.numpy())
            np.save(os.path.join(d, "output.npy"), ref)
            with open(os.path.join(d, "case.json"), "w") as f:
                json.dump(dict(name=name, input_shape=list(shape), seed=seed, torch=torch.__version__,
                               oracle="torch.compile (Inductor, freezing=True)", cpu="x86-64 with AVX-512 VNNI",
                               ops=ops), f, indent=1)
    print(f"{npass} passed, {nfail} failed")
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
