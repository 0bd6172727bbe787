#!/usr/bin/env python3
"""Record pt2e int8 conv/linear layers as torch.compile (Inductor, freezing,
x86 CPU) runs them, and test which arithmetic reproduces oneDNN's outputs.

Each case: one conv2d or linear quantized with torchao's X86InductorQuantizer
(uint8 activations, int8 per-channel symmetric weights), compiled with
`torch._inductor.config.freezing = True`. Inductor lowers the q/dq pattern to
`torch.ops.onednn.qconv_pointwise` / `qlinear_pointwise` (recorded from the
generated code). Two output kinds per conv:
  *_u8   conv -> max_pool2d(kernel 1) so the conv's output is quantized (u8) and
         oneDNN requantizes (the max pool of size 1 is an exact identity)
  *_f32  conv as the last layer: oneDNN writes f32 (acc * scale + bias)

`OUT/<case>/` gets case.json (versions, CPU, qparams, the generated kernel
calls), input.npy, weight_q.npy (int8), weight_scale.npy, bias.npy (f32),
output.npy (what the compiled model returned). `check_inductor.py` compares
candidate formulas.

Usage: python3 tools/pt2e/gen_inductor.py tests/data/pt2e/inductor_x86
"""
import argparse, json, os, re, shutil, sys, warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
# importing this module registers the oneDNN int8 lowerings with Inductor;
# without it torch.compile silently keeps the dequantized graph in float
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq  # noqa: F401
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
import torch._inductor.config as icfg
from torch._inductor.utils import run_and_get_code

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_pt2e_ops import versions, Fn, override_qparams  # noqa: E402

icfg.freezing = True
qd = torch.ops.quantized_decomposed


def cases():
    conv = nn.Conv2d
    c = {}
    c["conv3x3_u8"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(16, 32, 3, padding=1)), (1, 16, 16, 16), False, 1)
    c["conv3x3_relu_f32"] = (lambda: Fn(lambda s, x: F.max_pool2d(torch.relu(s.c(x)), 1), c=conv(8, 16, 3, padding=1)),
                             (1, 8, 10, 10), False, 2)
    c["conv_dw_u8"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(32, 32, 3, padding=1, groups=32)),
                       (1, 32, 16, 16), False, 3)
    c["conv1x1_wide_u8"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(64, 32, 1)), (2, 64, 12, 12), False, 4)
    c["conv3x3_u8_reduce_range"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(16, 32, 3, padding=1)),
                                    (1, 16, 16, 16), True, 5)
    c["conv3x3_f32"] = (lambda: Fn(lambda s, x: s.c(x), c=conv(16, 32, 3, padding=1)), (1, 16, 16, 16), False, 6)
    c["linear_f32"] = (lambda: Fn(lambda s, x: s.l(x), l=nn.Linear(64, 32)), (64, 64), False, 7)
    # exact ties: scales forced to powers of two after convert_pt2e (input 2^-5, weights
    # 2^-7 / 3*2^-9, output 2^-11): (acc*si)*ws is then exact and every output whose
    # acc*m has fraction .5 is a tie
    c["conv3x3_u8_tie"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(16, 32, 3, padding=1)),
                           (1, 16, 16, 16), False, 9,
                           dict(act=[(0, 2.0 ** -5, 100), (1, 2.0 ** -11, 120), (2, 2.0 ** -11, 120)], wscale=[2.0 ** -7, 3 * 2.0 ** -9]))
    c["conv3x3_u8_strided"] = (lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 1), c=conv(24, 40, 3, stride=2, padding=1)),
                               (1, 24, 20, 20), False, 8)
    return c


def _attr(gm, target):
    obj = gm
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj


def tensor_of(gm, node):
    obj = gm
    for p in node.target.split("."):
        obj = getattr(obj, p)
    return obj.detach()


def run(name, spec, outdir):
    build, shape, reduce_range, seed = spec[:4]
    override = spec[4] if len(spec) > 4 else None
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build().eval()
    calib = [torch.randn(shape, generator=g) for _ in range(4)]
    x = torch.randn(shape, generator=g)
    gm = torch.export.export(model, (calib[0],)).module()
    q = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    pm = prepare_pt2e(gm, q)
    for cx in calib:
        pm(cx)
    cm = convert_pt2e(pm)
    if override:
        override_qparams(cm, override["act"])
        for n in cm.graph.nodes:
            if n.op == "call_function" and n.target == qd.dequantize_per_channel.default:
                old = tensor_of(cm, n.args[1])
                new = torch.tensor([override["wscale"][i % len(override["wscale"])] for i in range(old.numel())], dtype=old.dtype)
                with torch.no_grad():
                    _attr(cm, n.args[1].target).copy_(new)
            if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
                b = n.args[2]
                nb = torch.randint(-64, 65, tensor_of(cm, b).shape, generator=g).float() * 2.0 ** -13
                with torch.no_grad():
                    _attr(cm, b.target).copy_(nb)
        cm.recompile()
        si, zi = override["act"][0][1], override["act"][0][2]
        # small activations (q within zp +- 4) so that acc * m stays inside [0, 255] and ties are frequent
        x = (torch.randint(-4, 5, shape, generator=g).double() * si).float()
    meta = dict(name=name, reduce_range=reduce_range, qparams_overridden=bool(override), versions=versions(), torch_cpu_capability=torch.backends.cpu.get_cpu_capability())
    qs = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == qd.quantize_per_tensor.default]
    meta["act_qparams"] = [dict(scale=float(n.args[1]), zero_point=int(n.args[2]), qmin=int(n.args[3]), qmax=int(n.args[4]),
                                dtype=str(n.args[5])) for n in qs]
    layer = [n for n in cm.graph.nodes if n.op == "call_function" and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)][0]
    wdq = layer.args[1]
    wq = tensor_of(cm, wdq.args[0])
    ws = tensor_of(cm, wdq.args[1]).float()
    bias = tensor_of(cm, layer.args[2]).float() if len(layer.args) > 2 and layer.args[2] is not None else torch.zeros(wq.shape[0])
    meta["op"] = "conv2d" if layer.target == torch.ops.aten.conv2d.default else "linear"
    if meta["op"] == "conv2d":
        a = list(layer.args) + [None] * (7 - len(layer.args))
        meta.update(stride=list(a[3] or [1, 1]), padding=list(a[4] or [0, 0]), dilation=list(a[5] or [1, 1]), groups=int(a[6] or 1))
    meta["weight_qmin_qmax"] = [int(wdq.args[4]), int(wdq.args[5])]
    meta["relu"] = any(n.target == torch.ops.aten.relu.default for n in cm.graph.nodes if n.op == "call_function")
    meta["output_kind"] = "u8" if len(qs) >= 2 else "f32"
    torch._dynamo.reset()
    with torch.no_grad():
        opt = torch.compile(cm)
        y, code = run_and_get_code(opt, x)
    calls = [l.strip() for l in code[0].split("\n") if re.search(r"torch\.ops\.(onednn|quantized)\.", l) and "=" in l]
    meta["kernel_calls"] = [re.sub(r"\s+", " ", l)[:300] for l in calls]
    consts = re.findall(r"static_cast<float>\(([-0-9.e]+)\)", code[0])
    meta["lowered_to_onednn"] = any("onednn" in l for l in calls)
    eager = cm(x).detach()
    meta["eager_equal_fraction"] = float((eager == y).float().mean())
    os.makedirs(outdir, exist_ok=True)
    np.save(os.path.join(outdir, "input.npy"), x.numpy())
    np.save(os.path.join(outdir, "weight_q.npy"), wq.numpy().astype(np.int8))
    np.save(os.path.join(outdir, "weight_scale.npy"), ws.numpy().astype(np.float32))
    np.save(os.path.join(outdir, "bias.npy"), bias.numpy().astype(np.float32))
    np.save(os.path.join(outdir, "output.npy"), y.detach().contiguous().numpy())
    with open(os.path.join(outdir, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    for n, spec in cases().items():
        if a.only and n not in a.only.split(","):
            continue
        d = os.path.join(a.out, n)
        if os.path.isdir(d):
            shutil.rmtree(d)
        m = run(n, spec, d)
        print(n, "onednn" if m["lowered_to_onednn"] else "NOT LOWERED", m["kernel_calls"][:2], flush=True)


if __name__ == "__main__":
    main()
