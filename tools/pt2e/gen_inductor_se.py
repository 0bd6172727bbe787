#!/usr/bin/env python3
"""Records what torch.compile (Inductor, freezing, torchao's X86InductorQuantizer lowerings
registered) computes for the float tails of squeeze-excitation blocks and mobilenet_v3's
classifier, on f32 tensors such as oneDNN's f32-output convs/linears write:

  gate_mul hardsigmoid  y = quantize_per_tensor(hardsigmoid(v2) * vA)   (mobilenet_v3's SE)
  gate_mul sigmoid      y = quantize_per_tensor(sigmoid(v2) * vA)       (efficientnet_b0, regnet_y)
  hardswish             y = quantize_per_tensor(hardswish(x))           (mobilenet_v3's classifier)

vA: f32 [N, C, H, W] channels-last (a conv's f32 output); v2: f32 [N, C, 1, 1] (the second SE
conv's f32 output); x: f32 [N, F] (a linear's output) or [N, C, H, W] channels-last.

First (unless --skip-models) it compiles torchvision mobilenet_v3_small / _large, regnet_y_400mf and
efficientnet_b0 quantized as tools/pt2e/test_pt2e_matrix.py does, takes the generated C++ of
every `cpp_fused_hardsigmoid_mul_quantize_per_tensor_*`, `cpp_fused_mul_quantize_per_tensor_sigmoid_*`
and `cpp_fused_hardswish_quantize_per_tensor_*` kernel, and checks that each one's statements
and loop nests (numbers and tmp names normalized) are among those of the standalone kernels
recorded here: the standalone functions compile to the same code as the models' kernels.

The inputs mix random values with values mined so that wrong candidate rules give other bytes
(a product by f32(1/6) instead of the division, other association orders, an FMA hardsigmoid,
glibc's expf or a correctly rounded sigmoid instead of Sleef's expf_u10), values at the bends
(v2 near -3 and 3, sigmoid's exp overflow) and exact .5 ties (power-of-two scales). Channel
counts 16, 19, 40, 72 exercise Inductor's 16-lane vector body and its masked vector tail.

Usage: python3 tools/pt2e/gen_inductor_se.py OUT [--skip-models]
  writes OUT/<case>.safetensors: tensors v2 (f32 [N, C, 1, 1]; gate_mul only), x (f32, NCHW /
  [N, F]), y (u8, same layout as x); metadata "case" (JSON: op, gate, scale, zero_point,
  kernel: the generated kernel's name, versions, cpu). This CPU: x86-64 with AVX-512 VNNI.
"""
import argparse, ctypes, json, os, platform, re, subprocess, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn.functional as F
# registers the quantized lowerings and quantized_decomposed ops
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
import torch._inductor.config as icfg
from torch._inductor.utils import run_and_get_code

F32 = np.float32
qpt = torch.ops.quantized_decomposed.quantize_per_tensor.default
HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_RE = re.compile(r"(cpp_fused_\w+) = async_compile\.cpp_pybinding\(.*?r'''(.*?)'''\)", re.S)
SE_KINDS = {
    "hardsigmoid": "cpp_fused_hardsigmoid_mul_quantize_per_tensor_",
    "sigmoid": "cpp_fused_mul_quantize_per_tensor_sigmoid_",
    "hardswish": "cpp_fused_hardswish_quantize_per_tensor_",
}


def compiled(fn, *args):
    torch._dynamo.reset()
    old = icfg.freezing
    icfg.freezing = True
    try:
        with torch.no_grad():
            y, code = run_and_get_code(torch.compile(fn), *args)
    finally:
        icfg.freezing = old
        torch._dynamo.reset()
    return y, "\n".join(code)


def kernels(code):
    return [(m.group(1), m.group(2)) for m in KERNEL_RE.finditer(code)]


def normalize(src):
    """(statement blocks, loop headers) of a kernel: numbers -> #, tmp names renumbered per block,
    buffer and loop variable names unified (a standalone kernel reads the gate from an out buffer
    where the model's kernel has it in place), element offsets elided"""
    blocks, loops = set(), set()
    for part in re.split(r"if\(C10_(?:UN)?LIKELY", src)[1:]:
        stmts = [l.strip() for l in part.splitlines() if re.match(r"\s*(auto tmp|tmp\w+ = |tmp\w+\.store)", l)]
        names = {}

        def ren(m):
            return names.setdefault(m.group(0), f"t{len(names)}")

        out = []
        for s in stmts:
            s = re.sub(r"\b(in_out_ptr|in_ptr|out_ptr)\d+\b", "ptr", s)  # buffer names
            # element offsets (they depend on the batch and the channel count; each operand's is
            # read in the code: the gate by n * C + c, x and y by (n * HW + p) * C + c)
            s = re.sub(r"ptr \+ static_cast<int64_t>\([^;]*?\)(, |\);|\))", r"ptr + OFFSET\1", s)
            s = re.sub(r"\bx\d+\b", "x", s)  # loop variables
            s = re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?L?\b", "#", s)
            s = re.sub(r"\btmp\w+\b", ren, s)
            out.append(s)
        if out:
            blocks.add(tuple(out))
    for l in src.splitlines():
        if l.strip().startswith("for("):
            loops.add(re.sub(r"\b\d+L?\b", "#", re.sub(r"\bx\d+\b", "x", l.strip())))
    return blocks, loops


# ---------------------------------------------------------------------------
# the models' kernels

def model_kernels(names, seed=5):
    sys.path.insert(0, HERE)
    import test_pt2e_matrix as M
    import inductor_oracle

    found = {k: [] for k in SE_KINDS}
    for name in names:
        kw, size, batch = M.MODELS[name]
        model = M.build_model(name, seed)
        cm, x = M.quantize(model, (batch, 3, size, size), "x86_inductor", seed)
        _, code = inductor_oracle.compiled_output(cm, x, return_code=True)
        for kname, src in kernels(code):
            for kind, prefix in SE_KINDS.items():
                if kname.startswith(prefix):
                    found[kind].append((name, kname, src))
        print(f"{name}: " + ", ".join(f"{len([f for f in found[k] if f[0] == name])} {k}" for k in SE_KINDS))
    return found


# ---------------------------------------------------------------------------
# candidate rules (numpy f32 arithmetic is correctly rounded), for mining inputs

_libm = ctypes.CDLL("libm.so.6")
_libm.expf.restype = ctypes.c_float
_libm.expf.argtypes = [ctypes.c_float]


def glibc_expf(v):
    return np.array([_libm.expf(float(a)) for a in np.asarray(v, F32).ravel()], F32).reshape(np.shape(v))


def fma32(a, b, c):
    # a*b exact in f64 (24-bit significands); the sum rounded twice (f64 then f32): only for mining
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(F32)


def relu6p3(v):
    return np.minimum(np.maximum((v + F32(3)).astype(F32), F32(0)), F32(6)).astype(F32)


def sleef_sigmoid(v):
    """Inductor's own sigmoid (the generated `1 / (1 + exp(-x))` with at::vec's exp)"""
    n = len(v)
    pad = (-n) % 16
    t = torch.from_numpy(np.concatenate([v, np.zeros(pad, F32)]).astype(F32))
    g, _ = compiled(torch.sigmoid, t)
    return g.numpy()[:n].astype(F32)


def gates(kind, v):
    """{rule name: per-channel gate}; 'R' the rule read in the generated code"""
    v = np.asarray(v, F32)
    if kind == "hardsigmoid":
        r = relu6p3(v)
        return {
            "R": (r / F32(6)).astype(F32),
            "recip": (r * F32(1 / 6)).astype(F32),
            "fma": np.clip(fma32(v, F32(1 / 6), F32(0.5)), 0, 1).astype(F32),
        }
    e = glibc_expf(-v)
    return {
        "R": sleef_sigmoid(v),
        "glibc": (F32(1) / (F32(1) + e).astype(F32)).astype(F32),
        "exact": (1 / (1 + np.exp(-v.astype(np.float64)))).astype(F32),
    }


def q(t, inv, z):
    return np.clip(np.rint((np.asarray(t, F32) * inv).astype(F32)) + z, 0, 255)


def mine_x(g1, g2, s, inv, z, rng, want=1):
    """x (f32) near a rounding boundary where f32(g1 * x) and f32(g2 * x) quantize differently"""
    out = []
    for _ in range(40):
        k = int(rng.integers(-z, 255 - z)) if rng.random() < 0.8 else int(rng.integers(1, 60))
        T = (k + 0.5) * float(s)
        g = float(g1) if g1 != 0 else float(g2)
        if g == 0:
            return out
        x0 = F32(T / g)
        xs = (np.array([x0], F32).view(np.int32) + np.arange(-3000, 3000, dtype=np.int32)).view(F32)
        xs = xs[np.isfinite(xs)]
        d = q((g1 * xs).astype(F32), inv, z) != q((g2 * xs).astype(F32), inv, z)
        if d.any():
            out.append(xs[np.flatnonzero(d)[rng.integers(0, d.sum())]])
            if len(out) >= want:
                break
    return out


# ---------------------------------------------------------------------------
# cases

def v2_values(kind, C, rng):
    """per-channel gate inputs: edges first, then mined (candidates' gates differ), then random"""
    if kind == "hardsigmoid":
        ulp = lambda a, k: (np.array([a], F32).view(np.int32) + k).view(F32)[0]
        edge = [F32(-3), ulp(-3, 1), ulp(-3, -1), F32(3), ulp(3, 1), ulp(3, -1), F32(0), F32(-1.5), F32(1.5),
                F32(-2.9999), F32(2.99999), F32(-7.5), F32(9)]
        pool = rng.uniform(-3.2, 3.2, 4000).astype(F32)
    else:
        edge = [F32(0), F32(-88.5), F32(-90), F32(-104.5), F32(-200), F32(17), F32(88), F32(104), F32(-16),
                F32(1e-6), F32(-1e-6)]
        pool = np.concatenate([rng.uniform(-12, 12, 6000), rng.normal(0, 2, 6000)]).astype(F32)
    g = gates(kind, pool)
    mined = []
    for name in g:
        if name == "R":
            continue
        idx = np.flatnonzero(g[name] != g["R"])
        rng.shuffle(idx)
        mined += list(pool[idx[:max(3, C // 4)]])
    vals = (edge[: max(4, C // 4)] + mined)[:C]
    while len(vals) < C:
        vals.append(pool[rng.integers(0, len(pool))])
    vals = np.array(vals, F32)
    rng.shuffle(vals)
    return vals


def gate_case(kind, N, C, H, W, s, z, rng):
    s = F32(s)
    inv = F32(F32(1) / s)
    v2 = np.stack([v2_values(kind, C, rng) for _ in range(N)]).astype(F32)
    g = {k: v.reshape(N, C) for k, v in gates(kind, v2.ravel()).items()}
    x = np.zeros((N, C, H * W), F32)
    for n in range(N):
        for c in range(C):
            px = list(rng.normal(0, 40 * float(s), H * W).astype(F32))
            if rng.random() < 0.5:
                px = list(np.maximum(np.array(px, F32), F32(0)))  # a relu'd conv output
            slots = list(range(H * W))
            rng.shuffle(slots)
            cand = []
            for name in g:
                if name != "R" and g[name][n, c] != g["R"][n, c]:
                    cand += mine_x(g["R"][n, c], g[name][n, c], s, inv, z, rng, want=2)
            # exact ties t * inv = m + 0.5 where g is a power of two
            gr = g["R"][n, c]
            if gr in (F32(0.5), F32(0.25), F32(1)):
                for m in rng.integers(-20, 60, 3):
                    cand.append(F32((m + 0.5) * float(s) / float(gr)))
            for slot, val in zip(slots, cand):
                px[slot] = val
            x[n, c] = px
    x = x.reshape(N, C, H, W)
    sf, zi = float(s), int(z)  # Python numbers: numpy scalars would become graph inputs
    fn = {
        "hardsigmoid": lambda a, b: qpt(F.hardsigmoid(a) * b, sf, zi, 0, 255, torch.uint8),
        "sigmoid": lambda a, b: qpt(torch.sigmoid(a) * b, sf, zi, 0, 255, torch.uint8),
    }[kind]
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    y, code = compiled(fn, torch.from_numpy(v2.reshape(N, C, 1, 1)), xt)
    ks = [k for k in kernels(code) if k[0].startswith(SE_KINDS[kind])]
    assert len(ks) == 1, [k[0] for k in kernels(code)]
    # the candidates' bytes (diagnostics: how many each one misses)
    want = y.contiguous().numpy()
    miss = {}
    for name in g:
        t = (g[name][:, :, None, None] * x).astype(F32)
        miss[name] = int((q(t, inv, z) != want).sum())
    return dict(v2=v2.reshape(N, C, 1, 1), x=x, y=want), ks[0], miss


def hardswish_h(x):
    r = relu6p3(x)
    return {
        "R": ((x * r).astype(F32) / F32(6)).astype(F32),
        "recip": ((x * r).astype(F32) * F32(1 / 6)).astype(F32),
        "gate_first": (x * (r / F32(6)).astype(F32)).astype(F32),
        "fma": (x * np.clip(fma32(x, F32(1 / 6), F32(0.5)), 0, 1)).astype(F32),
    }


def hardswish_case(shape, s, z, rng):
    s = F32(s)
    inv = F32(F32(1) / s)
    n = int(np.prod(shape))
    vals = list(rng.uniform(-4, 4 + 255 * float(s), n).astype(F32))
    edge = [F32(-3), F32(3), F32(0), F32(-1.5), F32(-3.0000002), F32(2.9999998), F32(-6), F32(7)]
    mined = []
    for _ in range(200):
        k = int(rng.integers(-z, 255 - z))
        T = (k + 0.5) * float(s)
        # x with x * (x + 3) / 6 = T (T > -0.375: the larger root)
        if T <= -0.375:
            continue
        x0 = F32((-3 + np.sqrt(9 + 24 * T)) / 2)
        xs = (np.array([x0], F32).view(np.int32) + np.arange(-2000, 2000, dtype=np.int32)).view(F32)
        h = hardswish_h(xs)
        for name in h:
            if name == "R":
                continue
            d = np.flatnonzero(q(h[name], inv, z) != q(h["R"], inv, z))
            if len(d):
                mined.append(xs[d[rng.integers(0, len(d))]])
        if len(mined) >= n // 2:
            break
    cand = edge + mined
    slots = rng.permutation(n)
    for slot, v in zip(slots, cand):
        vals[slot] = v
    x = np.array(vals, F32).reshape(shape)
    xt = torch.from_numpy(x)
    if len(shape) == 4:
        xt = xt.contiguous(memory_format=torch.channels_last)
    sf, zi = float(s), int(z)
    fn = lambda a: qpt(F.hardswish(a), sf, zi, 0, 255, torch.uint8)
    y, code = compiled(fn, xt)
    ks = [k for k in kernels(code) if k[0].startswith(SE_KINDS["hardswish"])]
    assert len(ks) == 1, [k[0] for k in kernels(code)]
    want = y.contiguous().numpy()
    h = hardswish_h(x)
    miss = {name: int((q(h[name], inv, z) != want).sum()) for name in h}
    return dict(x=x, y=want), ks[0], miss


CASES = [
    # name, op, gate / shape, (N, C, H, W), scale, zero point
    ("hsig_c16", "gate_mul", "hardsigmoid", (2, 16, 3, 4), 0.0123, 0),
    ("hsig_c19", "gate_mul", "hardsigmoid", (1, 19, 3, 5), 0.0217, 111),
    ("hsig_c40_tie", "gate_mul", "hardsigmoid", (2, 40, 2, 3), 2.0 ** -6, 3),
    ("hsig_c72", "gate_mul", "hardsigmoid", (1, 72, 4, 4), 0.00883, 64),
    ("sig_c16", "gate_mul", "sigmoid", (2, 16, 3, 4), 0.0131, 0),
    ("sig_c19", "gate_mul", "sigmoid", (1, 19, 3, 5), 0.0191, 106),
    ("sig_c40_tie", "gate_mul", "sigmoid", (2, 40, 2, 3), 2.0 ** -6, 9),
    ("sig_c72", "gate_mul", "sigmoid", (1, 72, 4, 4), 0.00731, 128),
    ("hsw_f19", "hardswish", None, (2, 19), 0.0311, 146),
    ("hsw_f40_tie", "hardswish", None, (3, 40), 2.0 ** -5, 20),
    ("hsw_c19", "hardswish", None, (1, 19, 3, 5), 0.0283, 100),
    ("hsw_c72", "hardswish", None, (2, 72, 2, 2), 0.0157, 31),
]


def versions():
    try:
        flags = [f for f in open("/proc/cpuinfo").read().split() if f in ("avx512f", "avx512_vnni", "avx512bw", "fma")]
    except OSError:
        flags = []
    try:
        git = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git = ""
    import torchao
    return {"torch": torch.__version__, "torchao": torchao.__version__, "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_flags": sorted(set(flags)), "git": git}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--models", default="mobilenet_v3_small,mobilenet_v3_large,regnet_y_400mf,efficientnet_b0")
    a = ap.parse_args()
    from safetensors.numpy import save_file

    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(20261202)
    ver = versions()
    standalone = {k: (set(), set()) for k in SE_KINDS}
    for name, op, gate, shape, s, z in CASES:
        if op == "gate_mul":
            N, C, H, W = shape
            t, (kname, src), miss = gate_case(gate, N, C, H, W, s, z, rng)
            kind = gate
        else:
            t, (kname, src), miss = hardswish_case(shape, s, z, rng)
            kind = "hardswish"
        b, l = normalize(src)
        standalone[kind][0].update(b)
        standalone[kind][1].update(l)
        meta = {"name": name, "op": op, "gate": gate, "scale": float(F32(s)), "zero_point": z,
                "kernel": kname, "shape": list(shape), "candidate_misses": miss, "versions": ver}
        tensors = {k: np.ascontiguousarray(v) for k, v in t.items()}
        save_file(tensors, os.path.join(a.out, f"{name}.safetensors"), metadata={"case": json.dumps(meta)})
        assert miss["R"] == 0, f"{name}: the rule read in the code misses {miss['R']} bytes"
        print(f"{name}: {kname}, candidate misses {miss}")
    if a.skip_models:
        return 0
    found = model_kernels([m for m in a.models.split(",") if m])
    bad = 0
    for kind, items in found.items():
        n_bad = 0
        for model, kname, src in items:
            b, l = normalize(src)
            extra_b = b - standalone[kind][0]
            extra_l = l - standalone[kind][1]
            if extra_b or extra_l:
                n_bad += 1
                print(f"DIFFERENT: {model} {kname}: statements {sorted(extra_b)} loops {sorted(extra_l)}")
        bad += n_bad
        print(f"{kind}: {len(items)} model kernels, {len(items) - n_bad} with every statement block and loop "
              "header among the standalone kernels'")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
