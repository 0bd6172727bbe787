#!/usr/bin/env python3
"""Generate calibration (observer) conformance vectors for qfuse.

For each activation observer in {minmax, moving_average, histogram} and each
quantized engine in {fbgemm, qnnpack} a small float CNN is quantized with
PyTorch's FX graph mode flow (prepare_fx -> 3 calibration batches ->
convert_fx).  The file records the float weights, the calibration batches and
the activation qparams PyTorch chose, so that qfuse's own calibration can be
checked against them.

Usage:  /root/venv/bin/python tools/gen_calib.py [OUT_DIR] [--seed N]
        (OUT_DIR defaults to tests/data/calib next to this script's repo)
Needs:  torch, numpy, safetensors

Output: <observer>_<engine>.safetensors, see tests/data/calib/README.md.
"""
import argparse, json, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch.ao.quantization import (
    QConfig,
    QConfigMapping,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    default_per_channel_weight_observer,
    default_weight_observer,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
from torch.ao.quantization.qconfig_mapping import _FIXED_QPARAMS_OP_TO_OBSERVER

OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "histogram": HistogramObserver,
}
ENGINES = ["fbgemm", "qnnpack"]
BN_EPS = 1e-5
# (gain, shift) per calibration batch: the range grows / moves between batches
CALIB = [(1.0, 0.0), (2.5, 0.3), (0.7, -0.8)]
POINTS = ["input", "conv1", "conv2", "add", "conv3", "fc"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 1)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = self.relu1(self.bn1(self.conv1(x)))
        b = self.bn2(self.conv2(a))
        y = F.relu(b + a)  # -> quantized::add_relu
        y = self.pool(y)
        y = self.relu3(self.conv3(y))
        y = self.gap(y)
        y = torch.flatten(y, 1)
        return self.fc(y)


def _randomize_bn(bn, g):
    # same distributions as /work/shared/conformance/gen.py
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5, generator=g)
        bn.running_var.uniform_(0.3, 2.5, generator=g)
        bn.weight.uniform_(0.4, 1.6, generator=g)
        bn.bias.uniform_(-0.4, 0.4, generator=g)


def make_float(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = Net()
    with torch.no_grad():
        for conv in (m.conv1, m.conv2, m.conv3):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
            if conv.bias is not None:
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.2)
        m.fc.weight.copy_(torch.randn(m.fc.weight.shape, generator=g) * 0.3)
        m.fc.bias.copy_(torch.randn(m.fc.bias.shape, generator=g) * 0.2)
    _randomize_bn(m.bn1, g)
    _randomize_bn(m.bn2, g)
    calib = [torch.randn(4, 3, 8, 8, generator=g) * gain + shift for gain, shift in CALIB]
    return m.eval(), calib


def make_qconfig_mapping(observer, engine):
    reduce_range = engine == "fbgemm"
    act = OBSERVERS[observer].with_args(
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=reduce_range
    )
    weight = default_per_channel_weight_observer if engine == "fbgemm" else default_weight_observer
    qconfig = QConfig(activation=act, weight=weight)
    # Start from the engine's default mapping, but make sure no object_type entry
    # (reshape, ConvTranspose, LayerNorm, PReLU ...) keeps a different activation
    # observer.  Fixed-qparams ops (sigmoid, tanh, softmax...) keep theirs; the net
    # has none of them.
    mapping = get_default_qconfig_mapping(engine)
    mapping.set_global(qconfig)
    for pattern in list(mapping.object_type_qconfigs):
        if pattern not in _FIXED_QPARAMS_OP_TO_OBSERVER:
            mapping.set_object_type(pattern, qconfig)
    return mapping, reduce_range


def observer_of(prepared):
    """Map each activation observer call in the prepared graph to the node it observes."""
    # NB: FX shares one observer instance between an op and the ops that reuse its
    # qparams (maxpool, adaptive_avg_pool, flatten); named_modules() dedups those, so
    # resolve each call target with getattr.
    out = {}
    for n in prepared.graph.nodes:
        if n.op == "call_module" and "activation_post_process" in str(n.target):
            out[n.target] = (n.args[0], getattr(prepared, n.target))
    return out


def src_key(node, mods):
    """Name of the point in POINTS that `node` (the observed node) is, or None."""
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module":
        t = type(mods[node.target]).__name__
        name = str(node.target)
        if name.startswith("conv1"):
            return "conv1"
        if name.startswith("conv2"):
            return "conv2"
        if name.startswith("conv3"):
            return "conv3"
        if name.startswith("fc"):
            return "fc"
        return None
    if node.op == "call_function" and node.target in (F.relu, torch.relu):
        a = node.args[0]
        if a.op == "call_function" and "add" in str(a.target):
            return "add"
    return None


def f32(v):
    return float(np.float32(v))


def ref_qparams(mn, mx, qmin, qmax):
    """PyTorch's _calculate_qparams (per_tensor_affine), in f32 like torch."""
    mn = np.float32(mn)
    mx = np.float32(mx)
    min_neg = np.minimum(mn, np.float32(0))
    max_pos = np.maximum(mx, np.float32(0))
    scale = (max_pos - min_neg) / np.float32(qmax - qmin)
    scale = np.maximum(scale, np.float32(np.finfo(np.float32).eps))
    zp = qmin - int(np.round(min_neg / scale))  # np.round = half-to-even like torch.round
    zp = min(max(zp, qmin), qmax)
    return float(scale), zp


# ---------------------------------------------------------------------------
# Pure-numpy re-implementation of torch's HistogramObserver (f32 semantics as in
# the CPU kernels), used to check that README.md describes it precisely.
F32 = np.float32


def ref_linspace(a, b, n):
    # torch CPU linspace (scalar kernel; FMA-contracted start + step*idx)
    a, b = F32(a), F32(b)
    step = F32((b - a) / F32(n - 1))
    i = np.arange(n, dtype=np.float64)
    lo = (np.float64(a) + np.float64(step) * i).astype(F32)
    hi = (np.float64(b) - np.float64(step) * (n - 1 - i)).astype(F32)
    return np.where(np.arange(n) < n // 2, lo, hi)


def ref_histc(x, bins, mn, mx):
    mn, mx = F32(mn), F32(mx)
    if mn == mx:
        mn, mx = F32(mn - 1), F32(mx + 1)  # (torch: falls back to data min/max, then +-1)
    x = x.astype(F32)
    keep = (x >= mn) & (x <= mx)
    x = x[keep]
    pos = (((x - mn) * F32(bins)) / (mx - mn)).astype(np.int64)  # f32, truncate
    pos[pos == bins] = bins - 1
    return np.bincount(pos, minlength=bins).astype(F32)


def ref_upscale(hist, omin, omax, nmin, nmax, bins, up=16):
    h = (np.repeat(hist, up) / F32(up)).astype(F32)
    bin_size = F32((omax - omin) / F32(bins * up))
    mids = (ref_linspace(omin, omax, bins * up + 1)[:-1] + F32(F32(0.5) * bin_size)).astype(F32)
    bounds = ref_linspace(nmin, nmax, bins + 1)
    idx = np.searchsorted(bounds, mids, side="right") - 1
    idx = np.clip(idx, 0, bins - 1)
    out = np.zeros(bins, F32)
    for j, w in zip(idx, h):  # sequential f32 accumulation like torch.bincount
        out[j] = F32(out[j] + w)
    return out


def ref_histogram_observe(xs, bins=2048):
    mn = mx = hist = None
    for x in xs:
        x = x.astype(F32)
        xmin, xmax = F32(x.min()), F32(x.max())
        if mn is None:
            mn, mx, hist = xmin, xmax, ref_histc(x, bins, xmin, xmax)
            continue
        nmin, nmax = min(mn, xmin), max(mx, xmax)
        upd = ref_histc(x, bins, nmin, nmax)
        if nmin == mn and nmax == mx:
            hist = (hist + upd).astype(F32)
        else:
            if mn == mx:
                t = ref_histc(np.array([mn], F32), bins, nmin, nmax) * F32(hist.sum(dtype=F32))
            else:
                t = ref_upscale(hist, mn, mx, nmin, nmax, bins)
            hist = (upd + t).astype(F32)
            mn, mx = nmin, nmax
    return float(mn), float(mx), hist


def _div_floor(a, b):
    a = a.astype(F32)
    b = F32(b)
    mod = np.fmod(a, b).astype(F32)
    div = ((a - mod) / b).astype(F32)
    div = np.where((mod != 0) & ((b < 0) != (mod < 0)), div - F32(1), div).astype(F32)
    fl = np.floor(div)
    fl = np.where(div - fl > F32(0.5), fl + F32(1), fl).astype(F32)
    return np.where(div != 0, fl, F32(0) * np.sign(a / b)).astype(F32)


def _get_norm(db, de, density):
    return (density * ((de * de * de - db * db * db) / F32(3))).astype(F32)


def ref_quant_error(hist, mn, mx, bins, dst_nbins, s, e):
    bin_width = (float(mx) - float(mn)) / bins  # python float (f64)
    dbw = bin_width * (e - s + 1) / dst_nbins
    if dbw == 0.0:
        return 0.0
    src = np.arange(bins, dtype=np.int64)
    begin = ((src - s).astype(F32) * F32(bin_width)).astype(F32)
    end = (begin + F32(bin_width)).astype(F32)
    dob = np.clip(_div_floor(begin, dbw), 0, dst_nbins - 1).astype(F32)
    dob_c = ((dob + F32(0.5)) * F32(dbw)).astype(F32)
    doe = np.clip(_div_floor(end, dbw), 0, dst_nbins - 1).astype(F32)
    density = (hist / F32(bin_width)).astype(F32)
    norm = np.zeros(bins, F32)
    norm += _get_norm((begin - dob_c).astype(F32), F32(dbw / 2), density)
    norm += ((doe - dob - F32(1)) * _get_norm(F32(-dbw / 2), F32(dbw / 2), density)).astype(F32)
    doe_c = (doe * F32(dbw) + F32(dbw / 2)).astype(F32)
    norm += _get_norm(F32(-dbw / 2), (end - doe_c).astype(F32), density)
    return float(norm.sum(dtype=F32))


def ref_non_linear_param_search(hist, mn, mx, bins, dst_nbins):
    bin_width = F32((mx - mn) / F32(bins))
    total = float(hist.sum(dtype=F32))
    csum = np.cumsum(hist.astype(np.float64)).astype(F32)
    stepsize, alpha, beta = 1e-5, 0.0, 1.0
    start, end = 0, bins - 1
    norm_min = float("inf")
    while alpha < beta:
        na, nb = alpha + stepsize, beta - stepsize
        l, r = start, end
        while l < end and csum[l] < F32(na * total):
            l += 1
        while r > start and csum[r] > F32(nb * total):
            r -= 1
        ns, ne = start, end
        if (l - start) > (end - r):
            ns, alpha = l, na
        else:
            ne, beta = r, nb
        if ns == start and ne == end:
            continue
        norm = ref_quant_error(hist, mn, mx, bins, dst_nbins, ns, ne)
        if norm > norm_min:
            break
        norm_min, start, end = norm, ns, ne
    return F32(mn + F32(bin_width * F32(start))), F32(mn + F32(bin_width * F32(end + 1)))


def run_case(observer, engine, seed, out_dir):
    torch.backends.quantized.engine = engine
    model, calib = make_float(seed)
    float_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mapping, reduce_range = make_qconfig_mapping(observer, engine)
    example = (calib[0],)
    prepared = prepare_fx(model, mapping, example)

    mods = dict(prepared.named_modules())
    obs = {}
    calls = {}  # observer id -> list of observed node names, in graph order
    for tgt, (src, o) in observer_of(prepared).items():
        calls.setdefault(id(o), []).append(src.name)
        k = src_key(src, mods)
        if k is None:
            continue
        if k in obs and obs[k] is not o:
            raise SystemExit(f"two different observers for {k}")
        obs[k] = o
    missing = [p for p in POINTS if p not in obs]
    if missing:
        print(prepared.graph)
        raise SystemExit(f"no observer found for {missing}")
    observed = {k: calls[id(obs[k])] for k in POINTS}
    expect = {"input": ["x"], "conv1": ["conv1"], "conv2": ["conv2"], "add": ["relu", "pool"],
              "conv3": ["conv3", "gap", "flatten"], "fc": ["fc"]}
    if observed != expect:
        raise SystemExit(f"unexpected observer sharing: {observed}")

    seen = {k: [] for k in POINTS}  # every tensor each observer saw, in order
    for k in POINTS:
        o = obs[k]
        o.register_forward_pre_hook(lambda mod, args, k=k: seen[k].append(args[0].detach().clone()))
    per_batch = {k: [] for k in POINTS}
    with torch.no_grad():
        for xb in calib:
            prepared(xb)
            for k in POINTS:
                per_batch[k].append([f32(obs[k].min_val.item()), f32(obs[k].max_val.item())])

    minmax = {k: [f32(obs[k].min_val.item()), f32(obs[k].max_val.item())] for k in POINTS}
    qmin, qmax = obs["input"].quant_min, obs["input"].quant_max
    hists = {}
    if observer == "histogram":
        for k in POINTS:
            h = obs[k].histogram.detach().cpu().numpy().astype(np.float32)
            assert h.shape == (2048,), h.shape
            hists[k] = h
    # observers' own qparams (calculate_qparams on the prepared model)
    obs_qp = {}
    for k in POINTS:
        s, z = obs[k].calculate_qparams()
        obs_qp[k] = [f32(s.item()), int(z.item())]

    converted = convert_fx(prepared)
    cmods = dict(converted.named_modules())
    qp = {}
    for n in converted.graph.nodes:
        if n.op == "call_function" and n.target == torch.quantize_per_tensor:
            s = getattr(converted, n.args[1].target)
            z = getattr(converted, n.args[2].target)
            if n.args[0].op == "placeholder":
                qp["input"] = [f32(float(s)), int(z)]
        if n.op == "call_function" and "add_relu" in str(n.target):
            s = getattr(converted, n.args[2].target)
            z = getattr(converted, n.args[3].target)
            qp["add"] = [f32(float(s)), int(z)]
    for name in ("conv1", "conv2", "conv3", "fc"):
        m = cmods[name]
        qp[name] = [f32(m.scale), int(m.zero_point)]
    if set(qp) != set(POINTS):
        print(converted.graph)
        raise SystemExit(f"missing qparams: {set(POINTS) - set(qp)}")
    # sanity: converted model's qparams == observer.calculate_qparams()
    for k in POINTS:
        if qp[k] != obs_qp[k]:
            raise SystemExit(f"{observer}/{engine}/{k}: convert {qp[k]} != observer {obs_qp[k]}")
        if observer != "histogram":
            r = ref_qparams(minmax[k][0], minmax[k][1], qmin, qmax)
            if list(r) != qp[k]:
                raise SystemExit(f"{observer}/{engine}/{k}: formula {r} != torch {qp[k]}")
    if observer in ("minmax", "moving_average"):
        for k in POINTS:
            mn = mx = None
            for t in seen[k]:
                cmin, cmax = F32(t.numpy().min()), F32(t.numpy().max())
                if mn is None or observer == "minmax":
                    mn = cmin if mn is None else min(mn, cmin)
                    mx = cmax if mx is None else max(mx, cmax)
                else:  # x + c*(cur - x), all f32
                    mn = F32(mn + F32(F32(0.01) * F32(cmin - mn)))
                    mx = F32(mx + F32(F32(0.01) * F32(cmax - mx)))
            if [float(mn), float(mx)] != minmax[k]:
                raise SystemExit(f"{observer} reference min/max for {k}: {mn},{mx} != {minmax[k]}")
    if observer == "histogram":
        for k in POINTS:
            mn, mx, h = ref_histogram_observe([t.numpy().ravel() for t in seen[k]])
            if (mn, mx) != tuple(minmax[k]) or not np.array_equal(h, hists[k]):
                raise SystemExit(f"histogram reference mismatch for {k}: "
                                 f"{(mn, mx)} vs {minmax[k]}, {np.abs(h - hists[k]).max()}")
            lo, hi = ref_non_linear_param_search(h, np.float32(mn), np.float32(mx), 2048, 256)
            r = ref_qparams(lo, hi, qmin, qmax)
            if list(r) != qp[k]:
                raise SystemExit(f"histogram reference qparams for {k}: {r} != torch {qp[k]}")
    # sanity: the quantized model runs and is close to the float one
    with torch.no_grad():
        yq = converted(calib[0])
        yf = model(calib[0])
    err = (yq - yf).abs().max().item()

    tensors = {}
    for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv3.weight", "conv3.bias",
              "fc.weight", "fc.bias"):
        tensors["float." + k] = float_sd[k].numpy().astype(np.float32)
    for bn in ("bn1", "bn2"):
        for p in ("weight", "bias", "running_mean", "running_var"):
            tensors[f"float.{bn}.{p}"] = float_sd[f"{bn}.{p}"].numpy().astype(np.float32)
    for i, xb in enumerate(calib):
        tensors[f"calib_{i}"] = xb.numpy().astype(np.float32)
    for k, h in hists.items():
        tensors[f"hist.{k}"] = h
    meta = {
        "observer": observer,
        "engine": engine,
        "bn_eps": BN_EPS,
        "reduce_range": reduce_range,
        "quant_min": int(qmin),
        "quant_max": int(qmax),
        "averaging_constant": 0.01 if observer == "moving_average" else None,
        "bins": 2048 if observer == "histogram" else None,
        "qparams": qp,
        "minmax": minmax,
        "minmax_after_batch": per_batch,
        "observed": {
            "input": ["x"], "conv1": ["conv1+bn1+relu1"], "conv2": ["conv2+bn2"],
            "add": ["relu(conv2_out + conv1_out)", "maxpool(add_out)"],
            "conv3": ["conv3+relu3", "adaptive_avg_pool(conv3_out)", "flatten(gap_out)"],
            "fc": ["fc"],
        },
        "weight_observer": "per_channel_symmetric_qint8" if engine == "fbgemm" else "per_tensor_symmetric_qint8",
        "seed": seed,
        "torch_version": torch.__version__,
    }
    path = os.path.join(out_dir, f"{observer}_{engine}.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
              metadata={"calib": json.dumps(meta)})
    print(f"== {observer}_{engine}  (q range [{qmin},{qmax}], max |q-f| on calib_0 = {err:.4f})")
    for k in POINTS:
        print(f"   {k:6s} scale={qp[k][0]:.9g} zp={qp[k][1]:3d}   min={minmax[k][0]:.7g} max={minmax[k][1]:.7g}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", nargs="?", default=os.path.join(here, "..", "tests", "data", "calib"))
    ap.add_argument("--seed", type=int, default=20240607)
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    os.makedirs(args.out_dir, exist_ok=True)
    for observer in OBSERVERS:
        for engine in ENGINES:
            run_case(observer, engine, args.seed, args.out_dir)


if __name__ == "__main__":
    main()
