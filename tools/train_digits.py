#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's 8x8 digits, quantize it with PyTorch FX
graph mode (fbgemm), and export it for qfuse.

Usage:  python3 tools/train_digits.py [--out-model models/digits.safetensors]
                                      [--out-data tests/data/digits] [--epochs 30] [--seed 0]

Deterministic: fixed seed, single thread, fixed split (the last 360 of the
1797 images are the test set, the rest train). Runs in well under a minute on CPU.

Writes
  models/digits.safetensors             the int8 model (tools/qfuse_export.py)
  tests/data/digits/test_images.npy     float32 [360, 1, 8, 8], pixels / 16 in [0, 1]
  tests/data/digits/test_labels.npy     int64   [360]
  tests/data/digits/float_logits.npy    float32 [360, 10]  float model
  tests/data/digits/int8_logits.npy     float32 [360, 10]  converted int8 model's (dequantized) output
and prints float and int8 test accuracy.
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfuse_export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TEST = 360
ENGINE = "fbgemm"


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.pool(x)
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(self.flatten(self.gap(x)))


def load_data():
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    return x[:-N_TEST], y[:-N_TEST], x[-N_TEST:], y[-N_TEST:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-model", default=os.path.join(ROOT, "models", "digits.safetensors"))
    ap.add_argument("--out-data", default=os.path.join(ROOT, "tests", "data", "digits"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.quantized.engine = ENGINE

    xtr, ytr, xte, yte = load_data()
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte_t = torch.from_numpy(xte)

    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(a.seed)
    bs = 64
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr_t), generator=g)
        total = 0.0
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            opt.zero_grad()
            loss = loss_fn(model(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: train loss {total / len(perm):.4f}")

    model.eval()
    with torch.no_grad():
        float_logits = model(xte_t).numpy().astype(np.float32)
    float_acc = float((float_logits.argmax(1) == yte).mean())

    prepared = prepare_fx(model, get_default_qconfig_mapping(ENGINE), (xtr_t[:1],))
    with torch.no_grad():
        for i in range(0, len(xtr_t), 256):
            prepared(xtr_t[i:i + 256])
    quantized = convert_fx(prepared)
    with torch.no_grad():
        int8_logits = quantized(xte_t).numpy().astype(np.float32)
    int8_acc = float((int8_logits.argmax(1) == yte).mean())

    header = qfuse_export.export(quantized, xte_t[:4], a.out_model, engine=ENGINE)
    os.makedirs(a.out_data, exist_ok=True)
    np.save(os.path.join(a.out_data, "test_images.npy"), xte)
    np.save(os.path.join(a.out_data, "test_labels.npy"), yte)
    np.save(os.path.join(a.out_data, "float_logits.npy"), float_logits)
    np.save(os.path.join(a.out_data, "int8_logits.npy"), int8_logits)

    print("convert_fx graph nodes:")
    for s in qfuse_export.ops_used(quantized):
        print("   ", s)
    print(f"exported {a.out_model}: {len(header['nodes'])} nodes: {[n['op'] for n in header['nodes']]}")
    print(f"float accuracy: {float_acc:.4f}  ({int(round(float_acc * N_TEST))}/{N_TEST})")
    print(f"int8 accuracy:  {int8_acc:.4f}  ({int(round(int8_acc * N_TEST))}/{N_TEST})")
    agree = float((float_logits.argmax(1) == int8_logits.argmax(1)).mean())
    print(f"float/int8 prediction agreement: {agree:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
