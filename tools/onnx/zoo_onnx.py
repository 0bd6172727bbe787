#!/usr/bin/env python3
"""Whole-model matrix for the ONNX Runtime rule set: torchvision models (weights=None, seeded
random weights, randomized BatchNorm statistics), exported to ONNX, quantized by
onnxruntime.quantization.quantize_static (QDQ and QOperator, uint8 and int8 activations,
per-channel and per-tensor int8 weights, reduce_range=True, MinMax calibration on a few seeded
random images), then

  * the op types in each quantized graph (as written by the quantizer) are tabulated, and so
    are the node types ORT actually executes (CPU EP, ORT_ENABLE_ALL, optimized graph dump);
  * ORT's output on a seeded test image is compared bit for bit with the numpy reference of
    tools/onnx/check_onnx_ops.py run on the whole quantized graph.

    python3 tools/onnx/zoo_onnx.py [--work DIR] [--models resnet18,...] [--json OUT.json] [--markdown]

Nothing it writes is meant to be committed except the summary (--json / --markdown output).
Needs torch, torchvision, onnx, onnxruntime, numpy (tools/onnx/requirements.txt).
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import traceback

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_onnx_ops as R  # noqa: E402

ort.set_default_logger_severity(3)

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5",
          "efficientnet_b0"]
CONFIGS = [(fmt, act, pc) for fmt in ("QDQ", "QOperator") for act in ("u8", "s8") for pc in (True, False)]
SHAPE = (1, 3, 64, 64)


def build(name, seed):
    torch.manual_seed(seed)
    m = getattr(torchvision.models, name)(weights=None)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return m.eval()


def export(model, path):
    x = torch.randn(*SHAPE)
    try:
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"], opset_version=17,
                          dynamo=False)
    except Exception:  # noqa: BLE001  (fall back to the dynamo exporter)
        prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["input"],
                                 output_names=["output"])
        prog.save(path)


class Reader(CalibrationDataReader):
    def __init__(self, seed, n=4):
        rng = np.random.default_rng(seed)
        self.data = [{"input": rng.normal(0, 1, size=SHAPE).astype(np.float32)} for _ in range(n)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        self.i += 1
        return self.data[self.i - 1]

    def rewind(self):
        self.i = 0


def op_types(model):
    return sorted({(n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node})


def ort_run(path, feeds):
    tmp = tempfile.mktemp(suffix=".onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = tmp
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)
    opt = onnx.load(tmp)
    os.remove(tmp)
    return out, op_types(opt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="zoo_onnx_")
    os.makedirs(work, exist_ok=True)
    results = []
    for mi, name in enumerate(args.models.split(",")):
        fpath = os.path.join(work, f"{name}.onnx")
        ppath = os.path.join(work, f"{name}.pre.onnx")
        if not os.path.exists(ppath):
            export(build(name, args.seed + mi), fpath)
            quant_pre_process(fpath, ppath, skip_symbolic_shape=False)
        float_ops = op_types(onnx.load(ppath))
        test = {"input": np.random.default_rng(1000 + mi).normal(0, 1, size=SHAPE).astype(np.float32)}
        for fmt, act, pc in CONFIGS:
            tag = f"{name}_{fmt}_{act}_{'pc' if pc else 'pt'}"
            qpath = os.path.join(work, tag + ".onnx")
            rec = {"model": name, "format": fmt, "act": act, "per_channel": pc, "float_ops": float_ops}
            try:
                quantize_static(ppath, qpath, Reader(args.seed), quant_format=getattr(QuantFormat, fmt),
                                per_channel=pc, reduce_range=True,
                                activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
                                weight_type=QuantType.QInt8)
                qm = onnx.load(qpath)
                rec["quantized_ops"] = op_types(qm)
                want, rec["ort_ops"] = ort_run(qpath, test)
                log = []
                try:
                    got, fused = R.reference(qm, test, log)
                    ok = all(np.asarray(g).dtype == w.dtype and np.asarray(g).shape == w.shape and
                             np.array_equal(np.asarray(g).view(np.uint8), w.view(np.uint8)) for g, w in zip(got, want))
                    if ok:
                        rec["reference"] = "bit-exact"
                    else:
                        d = np.abs(np.asarray(got[0], np.float64) - want[0].astype(np.float64))
                        rec["reference"] = f"DIFFERS ({int((d > 0).sum())}/{d.size} outputs, max {d.max():.3g})"
                    rec["reference_ops"] = sorted({n.op for n in fused})
                except NotImplementedError as e:
                    rec["reference"] = f"missing: {e}"
            except Exception as e:  # noqa: BLE001
                rec["reference"] = f"error: {type(e).__name__}: {e}"
                traceback.print_exc()
            results.append(rec)
            print(f"{tag:44s} {rec.get('reference')}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "torch": torch.__version__,
                       "torchvision": torchvision.__version__, "input_shape": list(SHAPE),
                       "quantize_static": "MinMax calibration, 4 seeded N(0,1) images, reduce_range=True, "
                                          "weight_type=QInt8",
                       "results": results}, f, indent=1)
    if args.markdown:
        print_markdown(results)
    bad = [r for r in results if r.get("reference") != "bit-exact"]
    print(f"{len(results) - len(bad)} bit-exact, {len(bad)} not")


def print_markdown(results):
    print("\n| model | format | act | weights | ops in the quantized graph | ORT executes | reference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['model']} | {r['format']} | {r['act']} | {'per-channel' if r['per_channel'] else 'per-tensor'} | "
              f"{' '.join(r.get('quantized_ops', []))} | {' '.join(r.get('ort_ops', []))} | {r.get('reference')} |")
    union = collections.Counter()
    for r in results:
        for o in r.get("quantized_ops", []):
            union[(r["format"], o)] += 1
    print("\nop types over all models, per format:")
    for fmt in ("QDQ", "QOperator"):
        print(fmt, sorted(o for (f, o) in union if f == fmt))


if __name__ == "__main__":
    main()
