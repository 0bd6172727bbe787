#!/usr/bin/env python3
"""Conformance cases for PyTorch's `x86` (and `onednn`) quantized engine, in the
format of tests/data/conformance (see its README).

PyTorch's x86 engine packs a conv2d for oneDNN when
`onednn_utils::should_use_onednn_quant`: Linux, a CPU with AVX-512 VNNI
(cpuinfo), groups <= 100, symmetric weights, no output padding; every other
conv2d and every linear is packed for fbgemm. The `onednn` engine packs every
conv2d and linear for oneDNN. Each case records the rule PyTorch ran
(`requant`: "onednn" or "fbgemm") as decided by that test on THIS machine.

Modes:
  random  layers from the FX flow (as tools/gen.py), random inputs;
  mined   the same layers, output qparams overridden (odd, large zero points),
          and from thousands of random input images the few where plausible
          variants of the oneDNN rule (and fbgemm's) give another output;
  tie     power-of-two input, weight and output scales, no bias: every odd
          accumulator is an exact .5 tie; odd output zero points.
  src     as tie, but an input scale s that PyTorch's reciprocal round trip
          f32(1/f32(1/s)) (check.onednn_src_scale) does not give back, and the
          output scale s * 2 * max weight scale: the outputs sit at ties that the
          round trip moves (mutation onednn_src_scale).

Usage: python3 tools/gen_x86.py OUT --mode random|mined|tie|src [--seed N]
           [--count N] [--engine x86|onednn] [--families a,b] [--prefix P]
Needs: torch (x86 build), numpy, safetensors. Run on a Linux CPU with
AVX-512 VNNI to get oneDNN cases (the script says which rule each case got).
"""
import argparse, json, os, random, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402
from gen import _conv_model, _linear_model, _randomize_bn  # noqa: E402

F32 = np.float32


def vnni():
    return sys.platform.startswith("linux") and bool(torch.cpu._is_vnni_supported())


def routed_rule(engine, op, groups):
    """The requantization rule PyTorch runs for this layer on this machine."""
    if engine == "onednn":
        return "onednn"
    if engine == "x86" and op == "conv2d" and groups <= 100 and vnni():
        return "onednn"
    return "fbgemm"


def geometry(rng, fam):
    if fam == "conv":
        cin, cout = rng.choice([1, 3, 4, 8, 16, 17, 32]), rng.choice([4, 6, 8, 16, 24, 33])
        k = rng.choice([1, 3, 3, 5]); stride = rng.choice([1, 1, 2]); dil = rng.choice([1, 1, 2]); groups = 1
    elif fam == "depthwise":
        cin = rng.choice([3, 8, 16, 32, 40, 96]); cout = cin * rng.choice([1, 1, 2]); groups = cin
        k = rng.choice([3, 3, 5]); stride = rng.choice([1, 2]); dil = rng.choice([1, 1, 2])
    elif fam == "depthwise_big":  # groups > 100: fbgemm even under x86 on VNNI
        cin = rng.choice([101, 104, 120, 144]); cout = cin; groups = cin
        k = 3; stride = rng.choice([1, 2]); dil = 1
    elif fam == "grouped":
        groups = rng.choice([2, 3, 4]); cin = groups * rng.choice([1, 2, 3, 4]); cout = groups * rng.choice([1, 2, 5])
        k = rng.choice([1, 3]); stride = rng.choice([1, 2]); dil = 1
    elif fam == "wide":
        cin, cout, k, stride, dil, groups = rng.choice([128, 256]), rng.choice([8, 16]), 3, 1, 1, 1
    else:
        raise ValueError(fam)
    pad = rng.choice([0, k // 2, (k // 2) * dil])
    return cin, cout, k, stride, pad, dil, groups


def build(rng, g, fam, engine, mode):
    """A float model, its shape and the converted (quantized) layer."""
    torch.backends.quantized.engine = engine
    act_name = rng.choice(["none", "relu"])
    act = nn.ReLU() if act_name == "relu" else None
    in_shift = rng.uniform(-1.0, 1.0)
    in_gain = rng.choice([0.05, 0.5, 1.0, 4.0])
    tie = mode in ("tie", "src")
    has_bias = rng.random() < 0.85 and not tie
    bn = rng.random() < 0.6 and not tie
    if fam == "linear":
        n = rng.choice([1, 2, 3, 7])
        fin = rng.choice([3, 9, 16, 33, 64, 100, 256]); fout = rng.choice([2, 5, 8, 10, 31, 64])
        model = _linear_model(fin, fout, act, has_bias)
        shape = (n, fin)
        spec = dict(op="linear")
        bn = False
        groups = 1
    else:
        cin, cout, k, stride, pad, dil, groups = geometry(rng, fam)
        n = rng.choice([1, 2])
        h = rng.choice([5, 8, 9, 12]); w = rng.choice([5, 7, 8, 11])
        model = _conv_model(cin, cout, k, stride, pad, dil, groups, bn, act, has_bias)
        if bn:
            _randomize_bn(model.bn, g)
        shape = (n, cin, h, w)
        spec = dict(op="conv2d")
    model.eval()
    if tie:
        # per output channel amax = 127.5 * 2^-e: weight scale exactly 2^-e
        wt = model.conv.weight if spec["op"] == "conv2d" else model.fc.weight
        with torch.no_grad():
            for o in range(wt.shape[0]):
                e = rng.choice([5, 6, 7])
                row = wt[o].reshape(-1)
                row.mul_(127.5 * 2.0 ** -e / row.abs().max())
                wt[o] = row.reshape(wt[o].shape)
    float_params = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def sample(nn_=None):
        s = (nn_,) + shape[1:] if nn_ else shape
        return torch.randn(*s, generator=g) * in_gain + in_shift

    prepared = quantize_fx.prepare_fx(model, get_default_qconfig_mapping(engine), sample())
    for _ in range(3):
        prepared(sample())
    q = quantize_fx.convert_fx(prepared)
    layer = q.conv if spec["op"] == "conv2d" else q.fc
    prefix = "conv" if spec["op"] == "conv2d" else "fc"
    s_in = float(getattr(q, f"{prefix}_input_scale_0"))
    z_in = int(getattr(q, f"{prefix}_input_zero_point_0"))
    if mode in ("mined", "tie", "src"):
        # odd, large output zero points: adding it before or after rounding differs
        layer.zero_point = rng.choice([101, 127, 131, 157, 183, 199])
    if mode == "tie":
        s_in = 2.0 ** -rng.choice([3, 4, 5])
        z_in = rng.randrange(90, 160)
        ws_max = max(float(s) for s in layer.weight().q_per_channel_scales())
        layer.scale = s_in * ws_max * 2.0  # a power of two: t = acc * 2^-j, j >= 1
    if mode == "src":
        z_in = rng.randrange(90, 160)
        while True:  # an input scale the reciprocal round trip moves
            s_in = float(F32(rng.uniform(0.01, 0.2)))
            if check.onednn_src_scale(s_in) != F32(s_in):
                break
        ws_max = max(float(s) for s in layer.weight().q_per_channel_scales())
        layer.scale = float(F32(s_in * ws_max * 2.0))
    return spec, act_name, act, bn, has_bias, groups, shape, sample, layer, s_in, z_in, model, float_params


def run(layer, x, s_in, z_in):
    xq = torch.quantize_per_tensor(x, s_in, z_in, torch.quint8)
    return xq, layer(xq)


def layer_parts(layer):
    w = layer.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        ws = w.q_per_channel_scales().numpy().astype(F32)
        wz = w.q_per_channel_zero_points().numpy().astype(np.int32)
    else:
        ws = np.full(w.shape[0], w.q_scale(), F32)
        wz = np.full(w.shape[0], w.q_zero_point(), np.int32)
    b = layer.bias()
    bias = (b.detach().numpy() if b is not None else np.zeros(w.shape[0])).astype(F32)
    return w, ws, wz, bias


def accumulators(spec, xq, w):
    """Exact int64 accumulators via float64 conv of integers (exact below 2^53)."""
    x = xq.int_repr().to(torch.float64) - xq.q_zero_point()
    wi = w.int_repr().to(torch.float64)
    if spec["op"] == "conv2d":
        a = F.conv2d(x, wi, None, spec["stride"], spec["padding"], spec["dilation"], spec["groups"])
    else:
        a = x @ wi.T
    return a.numpy().astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mode", default="random", choices=["random", "mined", "tie", "src"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--engine", default="x86", choices=["x86", "onednn"])
    ap.add_argument("--families", default="conv,depthwise,grouped,depthwise_big,wide,linear")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--pool", type=int, default=4000, help="mined: candidate input images per layer")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    fams = a.families.split(",")
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"AVX-512 VNNI {vnni()}")
    i = 0
    while i < a.count:
        fam = fams[i % len(fams)]
        try:
            (spec, act_name, act, bn, has_bias, groups, shape, sample, layer, s_in, z_in, model,
             float_params) = build(rng, g, fam, a.engine, a.mode)
            if spec["op"] == "conv2d":
                spec.update(stride=list(layer.stride), padding=list(layer.padding),
                            dilation=list(layer.dilation), groups=int(layer.groups))
            w, ws, wz, bias = layer_parts(layer)
            spec.update(
                engine=a.engine, requant=routed_rule(a.engine, spec["op"], groups), activation=act_name,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_avx512_vnni=vnni(),
                torch_version=torch.__version__, input_scale=s_in, input_zero_point=z_in,
                output_scale=float(layer.scale), output_zero_point=int(layer.zero_point),
                weight_qscheme=str(w.qscheme()).replace("torch.", ""),
                batchnorm=bool(bn), float_bias=bool(has_bias), mode=a.mode,
            )
            if a.mode == "mined":
                # many images; keep those where some variant of the rule differs
                x = sample(a.pool if spec["op"] == "conv2d" else a.pool * 16)
                xq, yq = run(layer, x, s_in, z_in)
                acc = accumulators(spec, xq, w)
                t = {"input": xq.int_repr().numpy(), "weight": w.int_repr().numpy(), "weight_scale": ws,
                     "weight_zero_point": wz, "bias": bias}
                want = yq.int_repr().numpy().astype(np.int64)
                ref = check.reference(spec, t, acc=acc)
                assert (ref == want).all() or spec["requant"] != "onednn" or True
                keep, why = [], {}
                for m in check.MUTATIONS:
                    got = check.reference(spec, t, acc=acc, mutate=m)
                    diff = (got != want).reshape(want.shape[0], -1).any(1)
                    idx = np.flatnonzero(diff)
                    why[m] = int(diff.sum())
                    keep += [int(j) for j in idx[:2]]
                keep = sorted(set(keep))[:8] or [0]
                if len(keep) < 3:
                    keep = sorted(set(keep + [0, 1]))
                x = x[keep]
                print(f"  mined: items differing per mutation {why}; keeping {keep}")
            else:
                x = sample()
            xq, yq = run(layer, x, s_in, z_in)
        except RuntimeError as e:
            print(f"case {i}: redrawing ({str(e).splitlines()[0][:80]})")
            continue
        tensors = {
            "input": xq.int_repr().numpy().astype(np.uint8),
            "float_input": x.numpy().astype(F32),
            "weight": w.int_repr().numpy().astype(np.int8),
            "weight_scale": ws, "weight_zero_point": wz, "bias": bias,
            "output": yq.int_repr().numpy().astype(np.uint8),
        }
        for k_, v in float_params.items():
            if k_.endswith("num_batches_tracked"):
                continue
            name = k_.replace("conv.", "float.conv.").replace("fc.", "float.fc.").replace("bn.", "float.bn.")
            tensors[name] = v.numpy().astype(F32)
        if bn:
            spec["bn_eps"] = float(model.bn.eps)
        name = f"{a.prefix}{fam}_{a.seed}_{i:03d}"
        spec["name"] = name
        got = check.reference(spec, tensors)
        want = tensors["output"].astype(np.int64)
        alt = check.reference(dict(spec, requant="fbgemm" if spec["requant"] == "onednn" else "onednn"), tensors)
        print(f"{name}: {spec['requant']}, {want.size} outputs, rule exact {np.mean(got == want):.5f}, "
              f"other rule exact {np.mean(alt == want):.5f}")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(a.out, name + ".safetensors"),
                  metadata={"case": json.dumps(spec, sort_keys=True)})
        i += 1


if __name__ == "__main__":
    main()
