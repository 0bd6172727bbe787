#!/usr/bin/env python3
"""PyTorch CPU baseline for BENCHMARKS.md: int8 (fbgemm, FX graph mode
quantization, Conv+BN+ReLU fused) vs float32, on the same ResNet-18-shaped and
MobileNetV2-shaped networks as `cargo run --example bench`, batch 1 and 16,
images/s (median of repeated runs after warm-up).

The networks are written out here (torchvision is not needed) and follow
torchvision's layouts. Unlike qfuse's end-to-end chain, PyTorch runs the whole
network: pooling and residual adds included.

    /root/venv/bin/python tools/bench_pytorch.py [--resolution 224] [--batch 1,16]
        [--threads N] [--budget 1.0] [--json out.json]
"""

import argparse
import warnings
import json
import statistics
import time

import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx


def cbr(cin, cout, k, s, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = cbr(cin, cout, 3, stride)
        self.conv2 = cbr(cout, cout, 3, 1, relu=False)
        self.down = cbr(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        short = x if self.down is None else self.down(x)
        return self.relu(self.conv2(self.conv1(x)) + short)


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 64, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.blocks(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.avg(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [cbr(cin, hidden, 1, 1)] if t != 1 else []
        layers += [cbr(hidden, hidden, 3, stride, groups=hidden), cbr(hidden, cout, 1, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


class MobileNetV2(nn.Module):
    # ReLU6 in torchvision; ReLU here (as in qfuse's bench: the clamp lives in the output qparams).
    def __init__(self):
        super().__init__()
        layers, cin = [cbr(3, 32, 3, 2)], 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(cbr(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, 1000)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avg(self.features(x)), 1))


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


def quantize(model, res, engine):
    torch.backends.quantized.engine = engine
    example = torch.randn(1, 3, res, res)
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (example,))
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn(4, 3, res, res))
    return convert_fx(prepared)


def time_model(model, x, budget, min_runs=5):
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            model(x)
        times, start = [], time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < budget:
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per case")
    ap.add_argument("--engine", default="fbgemm")
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Random deep float nets drift into subnormals, which x86 handles slowly:
    # flush them, so the float baseline is not penalised.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    res = args.resolution
    rows = []
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, engine {args.engine}, {res}x{res}")
    print("| network | batch | f32 ms | f32 images/s | int8 ms | int8 images/s | int8 speedup |")
    print("|---|---|---|---|---|---|---|")
    for name, cls in [("resnet18", ResNet18), ("mobilenet_v2", MobileNetV2)]:
        fmodel = cls().eval()
        randomize_bn(fmodel)
        qsrc = cls().eval()
        qsrc.load_state_dict(fmodel.state_dict())
        qmodel = quantize(qsrc, res, args.engine)
        for n in [int(b) for b in args.batch.split(",")]:
            x = torch.randn(n, 3, res, res)
            tf, rf = time_model(fmodel, x, args.budget)
            tq, rq = time_model(qmodel, x, args.budget)
            rows.append(dict(network=name, batch=n, resolution=res, f32_s=tf, f32_runs=rf, int8_s=tq, int8_runs=rq,
                             f32_images_per_s=n / tf, int8_images_per_s=n / tq, threads=torch.get_num_threads(),
                             engine=args.engine, torch=torch.__version__))
            print(f"| {name} | {n} | {tf * 1e3:.2f} | {n / tf:.1f} | {tq * 1e3:.2f} | {n / tq:.1f} | {tf / tq:.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
