#!/usr/bin/env python3
"""The torchvision matrix for pt2e models (issue #10 item 4): every architecture below,
random weights with randomized BatchNorm statistics, small inputs, quantized with pt2e
(prepare_pt2e, calibration, convert_pt2e) by two quantizers, exported with
`qfuse_export.export`, run with `qfuse run` and compared bit for bit with the runtime the
quantizer targets. One line per (model, quantizer), then "N passed, M failed, R refused"
and the run time.

  xnnpack       XNNPACKQuantizer (per-channel weights); oracle: ExecuTorch's runtime with
                the XNNPACK delegate (as tools/pt2e/test_pt2e_export.py)
  x86_inductor  X86InductorQuantizer; oracle: tools/pt2e/inductor_oracle.py
                (`compiled_output(converted_module, example_input)`) when importable. A
                model the exporter refuses (or with no oracle) is printed as
                "refused: <the error>" and counted apart from the failures.

Usage: python3 tools/pt2e/test_pt2e_matrix.py [--models a,b] [--quantizers xnnpack,x86_inductor]
           [--qfuse PATH] [--gpu] [--keep DIR] [--size N] [--list]
Needs the venv of tools/pt2e/requirements.txt plus torchvision, and the qfuse CLI
(cargo build --release --bin qfuse).
"""
import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)

# name: (constructor kwargs, input H=W, batch); inception_v3 needs >= 75 pixels
MODELS = {
    "resnet18": ({}, 64, 2),
    "resnet50": ({}, 64, 1),
    "resnext50_32x4d": ({}, 64, 1),
    "wide_resnet50_2": ({}, 48, 1),
    "mobilenet_v2": ({}, 64, 2),
    "mobilenet_v3_small": ({}, 64, 2),
    "mobilenet_v3_large": ({}, 64, 1),
    "shufflenet_v2_x0_5": ({}, 64, 2),
    "shufflenet_v2_x1_0": ({}, 64, 1),
    "googlenet": ({"aux_logits": False, "init_weights": True}, 64, 1),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, 80, 1),
    "squeezenet1_1": ({}, 64, 2),
    "mnasnet0_5": ({}, 64, 2),
    "regnet_x_400mf": ({}, 64, 1),
    "regnet_y_400mf": ({}, 64, 1),
    "efficientnet_b0": ({}, 64, 1),
    "densenet121": ({}, 64, 1),
    "alexnet": ({}, 64, 1),
    "vgg11_bn": ({}, 32, 1),
}
QUANTIZERS = ("xnnpack", "x86_inductor")


def build_model(name, seed):
    import torchvision

    torch.manual_seed(seed)
    kw, _, _ = MODELS[name]
    m = getattr(torchvision.models, name)(weights=None, num_classes=10, **kw)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                mod.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return m.eval()


def distinct_relus(model):
    """X86InductorQuantizer's prepare_pt2e fails on torchvision's resnets ("Input partition has
    more than one output node", _annotate_conv2d_binary_unary): each BasicBlock / Bottleneck
    calls its one `self.relu` module two or three times. The same blocks with functional relus
    (the same float model) quantize; a user does the same."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    def basic(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + idt)

    def bottleneck(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + idt)

    for m in model.modules():
        if isinstance(m, BasicBlock):
            m.forward = basic.__get__(m)
        elif isinstance(m, Bottleneck):
            m.forward = bottleneck.__get__(m)
    return model


def quantize(model, shape, quantizer, seed):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e

    g = torch.Generator().manual_seed(seed)
    calib = [torch.randn(shape, generator=g) for _ in range(3)]
    x = torch.randn(shape, generator=g) * 1.2
    if quantizer == "xnnpack":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)

        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    else:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

        q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    if quantizer == "x86_inductor":
        distinct_relus(model)
    gm = torch.export.export(model, (calib[0],)).module()
    pm = prepare_pt2e(gm, q)
    with torch.no_grad():
        for c in calib:
            pm(c)
    return convert_pt2e(pm), x


def oracle(quantizer, cm, x):
    """the runtime's f32 output, or raise _Refused"""
    if quantizer == "xnnpack":
        from test_pt2e_export import executorch_run

        return executorch_run(cm, x)[0]
    try:
        import inductor_oracle
    except ImportError as e:
        raise _Refused(f"no Inductor oracle (tools/pt2e/inductor_oracle.py: {e})")
    return np.asarray(inductor_oracle.compiled_output(cm, x), dtype=np.float32)


class _Refused(Exception):
    pass


def run_case(name, quantizer, a, work, seed):
    import qfuse_export
    from qfuse_export import ExportError
    from test_pt2e_export import qfuse_run, compare

    kw, size, batch = MODELS[name]
    size = a.size or size
    shape = (batch, 3, size, size)
    model = build_model(name, seed)
    cm, x = quantize(model, shape, quantizer, seed)
    mp = os.path.join(work, f"{name}_{quantizer}.safetensors")
    try:
        h = qfuse_export.export(cm, x, mp)
    except ExportError as e:
        return "refused", str(e).splitlines()[0]
    ref = oracle(quantizer, cm, x)
    xp, yp = os.path.join(work, f"{name}_{quantizer}_x.npy"), os.path.join(work, f"{name}_{quantizer}_y.npy")
    np.save(xp, x.numpy())
    np.save(os.path.join(work, f"{name}_{quantizer}_ref.npy"), ref)
    n_ops = len(h["nodes"])
    msgs = []
    for dev in ["cpu"] + (["gpu"] if a.gpu else []):
        got, err = qfuse_run(a.qfuse, mp, xp, yp, dev == "cpu")
        msg = f"qfuse run: {err}" if err else compare(got, ref)
        if msg:
            return "fail", f"[{dev}] {msg} ({n_ops} qfuse nodes)"
        msgs.append(dev)
    return "ok", f"{ref.size} outputs bit-exact on {'+'.join(msgs)} ({n_ops} qfuse nodes, input {list(shape)})"


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qfuse", default=os.path.join(tgt, "release", "qfuse"))
    ap.add_argument("--models", default="", help="comma-separated subset of the models")
    ap.add_argument("--quantizers", default=",".join(QUANTIZERS))
    ap.add_argument("--gpu", action="store_true", help="also run qfuse on the GPU")
    ap.add_argument("--keep", default=None, help="keep the model files and arrays in this folder")
    ap.add_argument("--size", type=int, default=0, help="override every model's input size")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        print("\n".join(MODELS))
        return 0
    models = [m.strip() for m in a.models.split(",") if m.strip()] or list(MODELS)
    quants = [q.strip() for q in a.quantizers.split(",") if q.strip()]
    for m in models:
        if m not in MODELS:
            print(f"unknown model {m!r} (--list)")
            return 2
    for q in quants:
        if q not in QUANTIZERS:
            print(f"unknown quantizer {q!r}: {', '.join(QUANTIZERS)}")
            return 2
    if not os.path.isfile(a.qfuse):
        print(f"no qfuse CLI at {a.qfuse} (cargo build --release --bin qfuse, or --qfuse PATH)")
        return 2
    work = a.keep or tempfile.mkdtemp(prefix="pt2e_matrix_")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    count = {"ok": 0, "fail": 0, "refused": 0}
    for name in models:
        seed = list(MODELS).index(name)
        for q in quants:
            t1 = time.time()
            try:
                status, msg = run_case(name, q, a, work, seed)
            except _Refused as e:
                status, msg = "refused", str(e)
            except Exception as e:  # noqa: BLE001
                status, msg = "fail", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if os.environ.get("QFUSE_MATRIX_TRACE"):
                    traceback.print_exc()
            count[status] += 1
            label = {"ok": "ok     ", "fail": "FAIL   ", "refused": "refused"}[status]
            sep = ": " if status != "refused" else ": refused: "
            print(f"{label} {name:<20} {q:<13}{sep}{msg} [{time.time() - t1:.0f} s]", flush=True)
    print(f"{count['ok']} passed, {count['fail']} failed, {count['refused']} refused "
          f"({time.time() - t0:.0f} s)")
    return 1 if count["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
