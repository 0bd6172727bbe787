#!/usr/bin/env python3
"""Whole-model ONNX vectors for qfuse (tests/onnx_models.rs): small networks with seeded random
weights, exported from PyTorch, quantized by onnxruntime.quantization.quantize_static, and ONNX
Runtime's output on a seeded batch-2 float32 input.

    python3 tools/onnx/gen_onnx_models.py tests/data/onnx/models [--seed 1] [--only SUBSTR]

Cases: four hand-written nets (tiny ResNet, tiny MobileNet, MLP, MLP without Flatten) in QDQ and QOperator, uint8
activations, per-channel and per-tensor int8 weights, plus int8-activation variants (per-channel,
both formats); and torchvision's squeezenet1_1 at 32x32 in two configurations. All with
reduce_range=True (7-bit weights, |w| <= 64): ORT's u8 x s8 kernels are exact on AVX2 CPUs
without VNNI too, so the vectors do not depend on VNNI. MinMax calibration on 4 seeded N(0,1)
batches. Writes <out>/<case>/{model.onnx,input_0.npy,output_0.npy} and <out>/manifest.json.
Reuses zoo_onnx.py (build/export/calibration reader) and gen_onnx_ops.py (ORT runner, CPU
description). Needs tools/onnx/requirements.txt.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_onnx_ops as G  # noqa: E402
import zoo_onnx as Z  # noqa: E402

nn = torch.nn


def conv_bn(cin, cout, k=3, s=1, groups=1, act="relu"):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act == "relu":
        layers.append(nn.ReLU())
    elif act == "relu6":
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class TinyResNet(nn.Module):
    """conv-bn-relu, one basic block (residual Add), maxpool, a strided conv, GAP, flatten, Gemm."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.b1 = conv_bn(8, 8)
        self.b2 = conv_bn(8, 8, act=None)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.down = conv_bn(8, 16, s=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(self.b2(self.b1(x)) + x)
        x = self.down(self.pool(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class TinyMobileNet(nn.Module):
    """stem conv (relu6 = Clip), inverted residual: pointwise expand, depthwise, pointwise project,
    residual Add; GAP, flatten, Gemm."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, s=2, act="relu6")
        self.expand = conv_bn(16, 32, k=1, act="relu6")
        self.dw = conv_bn(32, 32, groups=32, act="relu6")
        self.project = conv_bn(32, 16, k=1, act=None)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(256, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class FlatMLP(nn.Module):
    """The MLP on [N, 64] input: no Flatten (a float Flatten in front of the first QuantizeLinear is
    what the MLP case adds)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def randomize_bn(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return m.eval()


def build(arch, seed):
    if hasattr(torchvision.models, arch):
        return Z.build(arch, seed)
    torch.manual_seed(seed)
    return randomize_bn({"tiny_resnet": TinyResNet, "tiny_mobilenet": TinyMobileNet, "mlp": MLP, "mlp_flat": FlatMLP}[arch](), seed + 1)


# (architecture, input shape (batch 2), [(format, act, per_channel)])
U8 = [(f, "u8", pc) for f in ("QDQ", "QOperator") for pc in (True, False)]
S8 = [(f, "s8", True) for f in ("QDQ", "QOperator")]
NETS = [
    ("tiny_resnet", (2, 3, 16, 16), U8 + S8),
    ("tiny_mobilenet", (2, 3, 32, 32), U8 + S8),
    ("mlp", (2, 1, 16, 16), U8 + S8),
    ("mlp_flat", (2, 64), U8 + S8),
    ("squeezenet1_1", (2, 3, 32, 32), [("QDQ", "u8", True), ("QOperator", "u8", False)]),
]


def case_name(arch, fmt, act, pc):
    return f"{arch}_{fmt.lower()}_{act}_{'pc' if pc else 'pt'}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None, help="substring filter on case names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = {
        "generator": "tools/onnx/gen_onnx_models.py",
        "seed": args.seed,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu": G.cpu_description(),
        "session": "CPUExecutionProvider, default SessionOptions (graph_optimization_level ORT_ENABLE_ALL); "
                   "run with 1 and with the default number of intra-op threads, identical outputs",
        "quantize_static": "torch.onnx.export (opset 17, static batch 2), quant_pre_process, quantize_static with "
                           "MinMax calibration on 4 seeded N(0,1) batches, weight_type=QInt8, reduce_range=True "
                           "(7-bit weights: exact on AVX2 CPUs without VNNI too)",
        "cases": [],
    }
    work = tempfile.mkdtemp(prefix="gen_onnx_models_")
    try:
        for ni, (arch, shape, configs) in enumerate(NETS):
            Z.SHAPE = shape  # zoo_onnx's export and calibration reader read it
            fpath = os.path.join(work, f"{arch}.onnx")
            ppath = os.path.join(work, f"{arch}.pre.onnx")
            Z.export(build(arch, args.seed + 10 * ni), fpath)
            quant_pre_process(fpath, ppath, skip_symbolic_shape=False)
            x = np.random.default_rng([args.seed, 1000 + ni]).normal(0, 1, size=shape).astype(np.float32)
            for fmt, act, pc in configs:
                name = case_name(arch, fmt, act, pc)
                if args.only and args.only not in name:
                    continue
                qpath = os.path.join(work, name + ".onnx")
                quantize_static(ppath, qpath, Z.Reader(args.seed + ni), quant_format=getattr(QuantFormat, fmt),
                                per_channel=pc, reduce_range=True,
                                activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
                                weight_type=QuantType.QInt8)
                model = onnx.load(qpath)
                in_name = model.graph.input[0].name
                outs, nodes = G.run_ort(model, {in_name: x})
                d = os.path.join(args.out, name)
                os.makedirs(d, exist_ok=True)
                shutil.copyfile(qpath, os.path.join(d, "model.onnx"))
                np.save(os.path.join(d, "input_0.npy"), x)
                outl = []
                for j, (o, arr) in enumerate(zip(model.graph.output, outs)):
                    np.save(os.path.join(d, f"output_{j}.npy"), arr)
                    outl.append({"name": o.name, "file": f"output_{j}.npy", "dtype": str(arr.dtype),
                                 "shape": list(arr.shape)})
                manifest["cases"].append({
                    "name": name, "model": arch, "format": fmt.lower(), "act": act, "per_channel": pc,
                    "weight": "s8", "weight_bits": 7,
                    "inputs": [{"name": in_name, "file": "input_0.npy", "dtype": "float32", "shape": list(shape)}],
                    "outputs": outl, "ort_nodes": nodes})
                size = os.path.getsize(os.path.join(d, "model.onnx"))
                print(f"{name:36s} {size:8d} B  {' '.join(sorted(set(nodes)))}", flush=True)
    finally:
        shutil.rmtree(work)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest['cases'])} cases written to {args.out}")


if __name__ == "__main__":
    main()
