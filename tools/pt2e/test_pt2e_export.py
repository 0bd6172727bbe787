#!/usr/bin/env python3
"""End-to-end check of the pt2e exporter (qfuse_export, engine "xnnpack"): small
models quantized with ExecuTorch's XNNPACKQuantizer (prepare_pt2e, calibration,
convert_pt2e), exported to qfuse files with `qfuse_export.export` (from the
convert_pt2e GraphModule and from a torch.export.ExportedProgram of it: the two
files must be identical), run with `qfuse run` on the CPU (`--cpu`) and the GPU,
and compared bit for bit with ExecuTorch's runtime with the XNNPACK delegate (the
oracle, as in tools/pt2e/gen_pt2e_ops.py). One line per case and device, then
"N passed, M failed". Also checks that unsupported models raise ExportError.

Usage: python3 tools/pt2e/test_pt2e_export.py [--qfuse PATH] [--only a,b] [--no-gpu] [--keep DIR]
Needs: tools/pt2e/requirements.txt (torch, torchao, executorch, numpy), torchvision for
resnet18, safetensors; the qfuse CLI (cargo build --release --bin qfuse).
"""
import argparse
import os
import subprocess
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

from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import qfuse_export  # noqa: E402
from qfuse_export import ExportError  # noqa: E402


class SmallNet(nn.Module):
    """conv-relu, residual add(+relu), max pool, adaptive avg pool, flatten, linear"""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pool = nn.MaxPool2d(2)
        self.c4 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        y = F.relu(self.c2(x))
        y = self.c3(y)
        x = F.relu(x + y)
        x = self.pool(x)
        x = F.relu(self.c4(x))
        x = self.gap(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class MiscNet(nn.Module):
    """hardtanh after a conv (merged), relu6 between qparams (merged into the conv),
    mul, cat, mean, adaptive avg pool 2x2 (ExecuTorch's portable kernel), view, linear + relu"""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4 = nn.Conv2d(16, 8, 1)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        a = F.hardtanh(self.c1(x), -1.0, 1.0)
        b = F.relu6(self.c2(a))
        c = self.c3(a) * b
        d = torch.cat([c, a], 1)
        e = self.c4(d)
        m = e.mean([2, 3], keepdim=True)
        e = F.relu(e + m)
        p = F.adaptive_avg_pool2d(e, 2)
        v = p.view(p.shape[0], -1)
        return self.fc2(F.relu(self.fc1(v)))


class FeatMap(nn.Module):
    """a feature-map output (thousands of int8 values compared): conv-relu, conv, add + relu,
    max pool (3, 2, 1, ceil_mode) -> hardtanh(0, 4) (a clamp XNNPACK merges into the pool),
    depthwise conv, mul by a per-channel gate (broadcast), conv"""

    def __init__(self, relu6=False):
        super().__init__()
        self.relu6 = relu6
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, dilation=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.g = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 6, 3, stride=2)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(a + self.c2(a))
        p = F.max_pool2d(b, 3, 2, 1, ceil_mode=True)
        p = F.relu6(p) if self.relu6 else F.hardtanh(p, 0.0, 4.0)
        d = self.dw(p)
        gate = F.adaptive_avg_pool2d(d, 1)
        return self.c3(d * self.g(gate))


class UnaryNet(nn.Module):
    """the float unary ops XNNPACK runs as 256-entry tables (dq -> f -> q): hardswish,
    a squeeze-excitation gate (mean, conv, relu, conv, hardsigmoid / sigmoid, mul), silu,
    tanh, gelu, leaky_relu"""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.f1 = nn.Conv2d(8, 4, 1)
        self.f2 = nn.Conv2d(4, 8, 1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.g1 = nn.Conv2d(8, 4, 1)
        self.g2 = nn.Conv2d(4, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.c5 = nn.Conv2d(8, 6, 3)
        self.c0 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        # the gates pool quantized conv outputs: a pool of a unary op's float output is refused
        a = self.c0(F.hardswish(self.c1(x)))
        s = F.hardsigmoid(self.f2(F.relu(self.f1(a.mean([2, 3], keepdim=True)))))
        a = a * s
        b = self.c2(a)
        g = torch.sigmoid(self.g2(F.silu(self.g1(F.adaptive_avg_pool2d(b, 1)))))
        b = F.silu(b) * g
        c = torch.tanh(self.c3(b)) + F.gelu(self.c4(b))
        return self.c5(F.leaky_relu(c, 0.2))


class DenseTail(nn.Module):
    """densenet's float tail: a dense layer (BatchNorm not after a conv -> relu -> conv, cat),
    then `norm -> relu(inplace) -> adaptive_avg_pool2d(1) (or mean keepdim) -> flatten -> linear`,
    which XNNPACKQuantizer leaves in float between a dequantize and a quantize (XNNPACK's f32
    global average: xnnpack_channel_mean)"""

    def __init__(self, mean=False, act="relu"):
        super().__init__()
        self.mean, self.act = mean, act
        self.c1 = nn.Conv2d(3, 24, 3, stride=2, padding=1)
        self.n1 = nn.BatchNorm2d(24)
        self.c2 = nn.Conv2d(24, 16, 3, padding=1)
        self.n5 = nn.BatchNorm2d(40)
        self.fc = nn.Linear(40, 10)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for n in (self.n1, self.n5):
                c = n.num_features
                n.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                n.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                n.weight.copy_(torch.rand(c, generator=g) * 2 + 0.3)
                n.bias.copy_(torch.randn(c, generator=g) * 0.5)

    def forward(self, x):
        a = self.c1(x)
        a = torch.cat([a, self.c2(F.relu(self.n1(a)))], 1)
        f = self.n5(a)
        f = F.relu(f, inplace=True) if self.act == "relu" else f
        f = f.mean([2, 3], keepdim=True) if self.mean else F.adaptive_avg_pool2d(f, 1)
        return self.fc(torch.flatten(f, 1))


def resnet18():
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def mobilenet_v2():
    import torchvision

    return torchvision.models.mobilenet_v2(num_classes=10)


CASES = {
    # name: (build, input shape, per_channel, calibration spread)
    "smallnet_pc": (SmallNet, (8, 3, 16, 16), True),
    "smallnet_pt": (SmallNet, (8, 3, 16, 16), False),
    "featmap_pc": (FeatMap, (2, 3, 23, 23), True),
    "featmap_pt": (FeatMap, (2, 3, 23, 23), False),
    # max pool -> relu6 (float in the pt2e graph): a clamp XNNPACK merges into the pool (here the
    # relu6's qparams come out equal to the pool's; the case where they differ, XNNPACK reading the
    # pool's bytes with the relu6's qparams, is pinned by tests/data/pt2e/xnnpack/maxpool_relu6_requant)
    "maxpool_relu6_pc": (lambda: FeatMap(relu6=True), (2, 3, 23, 23), True),
    "miscnet_pc": (MiscNet, (2, 3, 12, 12), True),
    "miscnet_pt": (MiscNet, (2, 3, 12, 12), False),
    "resnet18_pc_64": (resnet18, (2, 3, 64, 64), True),
    "resnet18_pt_48": (resnet18, (1, 3, 48, 48), False),
    "mobilenet_v2_pc_64": (mobilenet_v2, (1, 3, 64, 64), True),
    "unarynet_pc": (UnaryNet, (2, 3, 15, 15), True),
    "unarynet_pt": (UnaryNet, (2, 3, 15, 15), False),
    "densetail_pc": (DenseTail, (2, 3, 14, 14), True),
    "densetail_mean_pt": (lambda: DenseTail(mean=True, act="none"), (2, 3, 13, 11), False),
}


def quantize(model, shape, per_channel, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    calib = [torch.randn(shape, generator=g) for _ in range(4)]
    x = torch.randn(shape, generator=g) * 1.2
    gm = torch.export.export(model, (calib[0],)).module()
    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    pm = prepare_pt2e(gm, q)
    for c in calib:
        pm(c)
    return convert_pt2e(pm), x


def executorch_run(cm, x):
    ep = torch.export.export(cm, (x,))
    low = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    prog = low.to_executorch()
    program = Runtime.get().load_program(prog.buffer)  # keep alive while the method runs
    method = program.load_method("forward")
    out = method.execute([x.clone()])[0].clone()
    del method, program
    return out.numpy(), ep


def qfuse_run(qfuse, model_path, x_path, y_path, cpu):
    env = dict(os.environ)
    if not cpu:
        env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    cmd = [qfuse, "run", model_path, "--input", x_path, "--output", y_path] + (["--cpu"] if cpu else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return None, (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
    return np.load(y_path), None


def compare(got, ref):
    if got.shape != ref.shape:
        return f"shape {got.shape} vs ExecuTorch {ref.shape}"
    bad = got.view(np.int32) != ref.astype(np.float32).view(np.int32)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        return f"{int(bad.sum())}/{bad.size} f32 differ (first at {j}: {got.flat[j]} vs ExecuTorch {ref.flat[j]})"
    return None


def to_tensor_overloads(cm):
    """A copy of a convert_pt2e graph whose quantize/dequantize_per_tensor nodes use the
    `.tensor` overloads (scale and zero point as tensors)."""
    import copy

    qd = torch.ops.quantized_decomposed
    swap = {qd.quantize_per_tensor.default: qd.quantize_per_tensor.tensor,
            qd.dequantize_per_tensor.default: qd.dequantize_per_tensor.tensor}
    g = copy.deepcopy(cm)
    k = 0
    for n in list(g.graph.nodes):
        if n.op == "call_function" and n.target in swap:
            attrs = []
            for v, dt in ((n.args[1], torch.float64), (n.args[2], torch.int64)):
                name = f"_qparam{k}"
                k += 1
                g.register_buffer(name, torch.tensor(v, dtype=dt))
                with g.graph.inserting_before(n):
                    attrs.append(g.graph.get_attr(name))
            n.args = (n.args[0], attrs[0], attrs[1]) + tuple(n.args[3:])
            n.target = swap[n.target]
    g.recompile()
    return g, k


def rules_port(trials=300, seed=7):
    """qfuse_export.xnnpack_rules (what the exporter writes) against check_pt2e_ops.py (the numpy
    rules that reproduce ExecuTorch on the 92 committed cases) on every input byte / byte pair,
    for random and power-of-two qparams (exact ties): the whole models above rarely meet a tie."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import check_pt2e_ops as ref
    from qfuse_export import xnnpack_rules as xr

    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(-128, 128), 256)
    b = np.tile(np.arange(-128, 128), 256)
    q = np.arange(-128, 128)

    def scale():
        if rng.random() < 0.4:
            return float(2.0 ** int(rng.integers(-9, -3)))
        return float(np.float32(rng.uniform(0.002, 0.05)))

    for t in range(trials):
        sa, sb, so = scale(), scale(), scale()
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        act = "relu" if rng.random() < 0.5 else "none"
        nd = dict(input_scales=[sa, sb], input_zero_points=[za, zb], output_scale=so, output_zero_point=zo,
                  activation=act)
        lo = xr.quantize_bound(0.0, so, zo) if act == "relu" else -128
        ratio_ok = 2.0 ** -10 <= max(sa, sb) / so < 2.0 ** 8
        if ratio_ok:
            want = ref.add(a, b, nd) + 128
            got = xr.add_table(sa, za, sb, zb, so, zo, lo)
            if not np.array_equal(got, want):
                return f"add table differs (trial {t}: {nd})"
        want = ref.mul(a, b, nd) + 128
        if not np.array_equal(xr.mul_table(sa, za, sb, zb, so, zo, lo), want):
            return f"mul table differs (trial {t}: {nd})"
        lo_f, hi_f = sorted(float(v) for v in rng.uniform(-3, 6, 2))
        for si, zi in ((so, zo), (sa, za)):
            cn = dict(min=lo_f, max=hi_f, input_scale=si, input_zero_point=zi, output_scale=so,
                      output_zero_point=zo)
            if xr.clamp_table(si, zi, so, zo, lo_f, hi_f) != list(ref.clamp(q, cn) + 128):
                return f"clamp table differs (trial {t}: {cn})"
        tie = (int(rng.integers(-20, 20)) + 0.5) * so  # v / s lands on .5 (exact for power-of-two s)
        for v in (0.0, lo_f, hi_f, 6.0, float("inf"), tie):
            if xr.quantize_bound(v, so, zo) != ref.xnn_qs8_quantize(v, so, zo):
                return f"quantize bound differs ({v}, {so}, {zo})"
        ws = rng.uniform(1e-4, 1e-2, 16).astype(np.float32)
        bias = (rng.standard_normal(16) * 3).astype(np.float32)
        for pc in (True, False):
            w = ws if pc else np.full(16, ws[0], np.float32)
            if not np.array_equal(xr.bias_i32(bias, w, sa, pc), ref.bias_i32_rule(bias, w, sa, pc)):
                return f"bias rule differs (per_channel={pc})"
    return None


def refusals():
    """Unsupported pt2e models must raise ExportError naming the node and op."""
    res = []

    class Sig(nn.Module):
        """a float op as the graph's output (sigmoid of a dequantized tensor)"""

        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sigmoid(self.c(x))

    class Elu(nn.Module):
        """elu between dq and q: ExecuTorch lowers it outside the unary-table path"""

        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.d = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.d(F.elu(self.c(x)))

    for name, m in (("refuse_sigmoid_output", Sig()), ("refuse_elu", Elu())):
        cm, x = quantize(m.eval(), (1, 3, 8, 8), True, 0)
        try:
            qfuse_export.build(cm, x)
            res.append((name, "no ExportError"))
        except ExportError as e:
            msg = str(e)
            ok = "node '" in msg and ("sigmoid" in msg or "elu" in msg)
            res.append((name, None if ok else f"message does not name the node and op: {msg}"))
    # the .tensor overloads of quantize/dequantize_per_tensor give the same file
    cm, x = quantize(SmallNet().eval(), (2, 3, 8, 8), True, 0)
    try:
        g, k = to_tensor_overloads(cm)
        same_eager = torch.equal(g(x), cm(x))
        h1, t1 = qfuse_export.build(cm, x)
        h2, t2 = qfuse_export.build(g, x)
        same = h1 == h2 and t1.keys() == t2.keys() and all(np.array_equal(t1[n], t2[n]) for n in t1)
        res.append(("tensor_overloads", None if same and same_eager and k > 0 else
                    f"differs (eager equal {same_eager}, {k} qparams rewritten)"))
    except Exception as e:  # noqa: BLE001
        res.append(("tensor_overloads", f"{type(e).__name__}: {e}"))
    # an unknown engine for a pt2e model
    cm, x = quantize(SmallNet().eval(), (1, 3, 8, 8), True, 0)
    try:
        qfuse_export.build(cm, x, engine="fbgemm")
        res.append(("refuse_engine_fbgemm", "no ExportError"))
    except ExportError:
        res.append(("refuse_engine_fbgemm", None))
    # the FX engine check does not apply: any torch.backends.quantized.engine works
    prev = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "qnnpack"
        h, _ = qfuse_export.build(cm, x)
        res.append(("pt2e_ignores_quantized_engine", None if h["engine"] == "xnnpack" else h["engine"]))
    except Exception as e:  # noqa: BLE001
        res.append(("pt2e_ignores_quantized_engine", f"{type(e).__name__}: {e}"))
    finally:
        torch.backends.quantized.engine = prev
    return res


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qfuse", default=os.path.join(tgt, "release", "qfuse"))
    ap.add_argument("--only", default="")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--keep", default=None, help="keep the model files and arrays in this folder")
    a = ap.parse_args()
    if not os.path.isfile(a.qfuse):
        print(f"no qfuse CLI at {a.qfuse} (cargo build --release --bin qfuse, or --qfuse PATH)")
        return 2
    work = a.keep or tempfile.mkdtemp(prefix="pt2e_export_")
    os.makedirs(work, exist_ok=True)
    npass = nfail = 0
    names = [n for n in CASES if not a.only or n in a.only.split(",")]
    for name in names:
        seed = list(CASES).index(name)  # the same case whatever --only selects
        build_fn, shape, pc = CASES[name]
        try:
            torch.manual_seed(seed)
            model = build_fn().eval()
            cm, x = quantize(model, shape, pc, seed)
            ref, ep = executorch_run(cm, x)
            mp, mp2 = os.path.join(work, f"{name}.safetensors"), os.path.join(work, f"{name}_ep.safetensors")
            h = qfuse_export.export(cm, x, mp)
            qfuse_export.export(ep, x, mp2)
            same_file = open(mp, "rb").read() == open(mp2, "rb").read()
            xp, yp = os.path.join(work, f"{name}_x.npy"), os.path.join(work, f"{name}_y.npy")
            np.save(xp, x.numpy())
            np.save(os.path.join(work, f"{name}_executorch.npy"), ref)
            eager = cm(x).detach().numpy()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {name}: export: {type(e).__name__}: {e}")
            nfail += 1
            continue
        n_ops = len(h["nodes"])
        # a clamp with new qparams merged into a max pool: the pool's bytes reinterpreted
        by = {n["name"]: n for n in h["nodes"]}
        reint = [n["name"] for n in h["nodes"] if n["op"] == "lut" and by.get(n["inputs"][0], {}).get("op") ==
                 "max_pool2d" and by.get(by[n["inputs"][0]]["inputs"][0], {}).get("scale") != n["scale"]]
        note = f"; pool bytes reinterpreted at {reint}" if reint else ""
        eager_eq = float(np.mean(eager.view(np.int32) == ref.view(np.int32)))
        if not same_file:
            print(f"FAIL {name}: the GraphModule and ExportedProgram exports differ")
            nfail += 1
        for dev in ["cpu"] + ([] if a.no_gpu else ["gpu"]):
            got, err = qfuse_run(a.qfuse, mp, xp, yp, dev == "cpu")
            msg = f"qfuse run: {err}" if err else compare(got, ref)
            if msg:
                print(f"FAIL {name} [{dev}]: {msg}")
                nfail += 1
            else:
                print(f"ok   {name} [{dev}]: {ref.size} outputs bit-exact with ExecuTorch+XNNPACK "
                      f"({n_ops} qfuse nodes; eager pt2e graph equal on {eager_eq:.0%}{note})")
                npass += 1
    if not a.only:
        for name, err in [("rules_port", rules_port())] + refusals():
            if err:
                print(f"FAIL {name}: {err}")
                nfail += 1
            else:
                print(f"ok   {name}")
                npass += 1
    print(f"{npass} passed, {nfail} failed")
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
