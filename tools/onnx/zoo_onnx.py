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

With --qfuse PATH (the `qfuse` binary; tools/onnx/test_onnx.sh wraps this) each quantized model also
runs through `qfuse run` on the GPU and with --cpu, and its float32 output is compared bit for bit
with ORT's: one line per case, PASS / FAIL: first mismatch / REFUSED: qfuse's error, and a final
"N passed, M failed, K refused" (a case counts as passed when both the GPU and the CPU runs pass).
--no-reference skips the numpy interpreter; --batch N, --size HW set the input shape.

Nothing it writes is meant to be committed except the summary (--json / --markdown output).
Needs torch, torchvision, onnx, onnxruntime, numpy (tools/onnx/requirements.txt).
"""
import argparse
import collections
import json
import os
import subprocess
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
# the --qfuse matrix (tools/onnx/test_onnx.sh)
QFUSE_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5",
                "efficientnet_b0", "googlenet", "densenet121", "regnet_x_400mf", "mnasnet0_5"]
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


def first_line(text):
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    return (errs or lines or ["(no output)"])[0][:300]


def qfuse_run(qfuse, model, x, want, work, cpu, timeout):
    """One `qfuse run`: ("PASS", ""), ("FAIL", first mismatch) or ("REFUSED", qfuse's error)."""
    xin = os.path.join(work, "qfuse_in.npy")
    yout = os.path.join(work, "qfuse_out.npy")
    np.save(xin, x)
    if os.path.exists(yout):
        os.remove(yout)
    cmd = [qfuse, "run", model, "--input", xin, "--output", yout] + (["--cpu"] if cpu else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "FAIL", f"timed out after {timeout} s"
    if p.returncode != 0:
        msg = first_line(p.stderr + p.stdout).replace(f"qfuse: error: {model}: ", "")
        # a panic or a crash is a bug, not a refusal
        if "panicked" in p.stderr or p.returncode < 0 or p.returncode == 101:
            return "FAIL", f"crash (exit {p.returncode}): {msg}"
        return "REFUSED", msg
    got = np.load(yout)
    if got.dtype != want.dtype or got.shape != want.shape:
        return "FAIL", f"output {got.dtype}{list(got.shape)}, ORT {want.dtype}{list(want.shape)}"
    g, w = got.reshape(-1).view(np.uint32), want.reshape(-1).view(np.uint32)
    bad = np.nonzero(g != w)[0]
    if len(bad):
        i = int(bad[0])
        return "FAIL", (f"{len(bad)}/{w.size} differ, first at flat {i}: qfuse {got.reshape(-1)[i]} ({g[i]:#010x}), "
                        f"ORT {want.reshape(-1)[i]} ({w[i]:#010x})")
    return "PASS", ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--qfuse", default=None, help="path of the qfuse binary: run every case through it")
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy interpreter")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="input height and width")
    ap.add_argument("--configs", default=None, help="substring filter on FMT_ACT_pc|pt, e.g. QOperator_u8")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per qfuse run")
    args = ap.parse_args()
    global SHAPE
    if args.batch or args.size:
        SHAPE = (args.batch or SHAPE[0], 3, args.size or SHAPE[2], args.size or SHAPE[3])
    if args.qfuse:
        args.qfuse = os.path.abspath(args.qfuse)
    work = args.work or tempfile.mkdtemp(prefix="zoo_onnx_")
    os.makedirs(work, exist_ok=True)
    results = []
    for mi, name in enumerate(args.models.split(",")):
        fpath = os.path.join(work, f"{name}.onnx")
        ppath = os.path.join(work, f"{name}.pre.onnx")
        if not os.path.exists(ppath):
            try:
                export(build(name, args.seed + mi), fpath)
                quant_pre_process(fpath, ppath, skip_symbolic_shape=False)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                print(f"{name:44s} ERROR (export): {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
        float_ops = op_types(onnx.load(ppath))
        test = {"input": np.random.default_rng(1000 + mi).normal(0, 1, size=SHAPE).astype(np.float32)}
        for fmt, act, pc in CONFIGS:
            tag = f"{name}_{fmt}_{act}_{'pc' if pc else 'pt'}"
            if args.configs and args.configs not in tag:
                continue
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
                if args.qfuse:
                    runs = [qfuse_run(args.qfuse, qpath, test["input"], want[0], work, cpu, args.timeout)
                            for cpu in (False, True)]
                    for kind in ("FAIL", "REFUSED"):
                        hit = [(on, m) for on, (k, m) in zip(("GPU", "CPU"), runs) if k == kind]
                        if hit:
                            on = "+".join(h[0] for h in hit) if len({h[1] for h in hit}) == 1 else hit[0][0]
                            rec["qfuse"] = f"{kind} ({on}): {hit[0][1]}"
                            break
                    else:
                        rec["qfuse"] = "PASS"
                    print(f"{tag:44s} {rec['qfuse']}", flush=True)
                if not args.no_reference:
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
                if args.qfuse and "qfuse" not in rec:
                    rec["qfuse"] = f"ERROR (export/quantize/ORT): {type(e).__name__}: {str(e)[:200]}"
                    print(f"{tag:44s} {rec['qfuse']}", flush=True)
                traceback.print_exc()
            results.append(rec)
            if not args.no_reference:
                print(f"{tag:44s} {rec.get('reference')}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "torch": torch.__version__,
                       "torchvision": torchvision.__version__, "input_shape": list(SHAPE),
                       "quantize_static": "MinMax calibration, 4 seeded N(0,1) images, reduce_range=True, "
                                          "weight_type=QInt8",
                       "results": results}, f, indent=1)
    if args.markdown and not args.no_reference:
        print_markdown(results)
    if args.qfuse:
        n = collections.Counter(r.get("qfuse", "ERROR").split(" ")[0].rstrip(":") for r in results)
        if args.markdown:
            print("\n| model | format | act | weights | qfuse (GPU and CPU) |")
            print("| --- | --- | --- | --- | --- |")
            for r in results:
                print(f"| {r['model']} | {r['format']} | {r['act']} | "
                      f"{'per-channel' if r['per_channel'] else 'per-tensor'} | {r.get('qfuse')} |")
        print(f"{n['PASS']} passed, {n['FAIL']} failed, {n['REFUSED']} refused"
              + (f", {n['ERROR']} not run (export/quantize/ORT error)" if n["ERROR"] else ""))
    if args.no_reference:
        return
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
