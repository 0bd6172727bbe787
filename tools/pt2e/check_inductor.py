#!/usr/bin/env python3
"""Test candidate formulas for oneDNN's int8 conv/linear (as torch.compile /
Inductor calls it on x86) against the outputs recorded by gen_inductor.py.

For each case and candidate: the fraction of outputs reproduced bit for bit and
the largest difference (in quantization steps for u8 outputs, in f32 ulps for
f32 outputs). The first candidate that matches every output of every case is
the rule written in tests/data/pt2e/README.md.

Usage: python3 tools/pt2e/check_inductor.py tests/data/pt2e/inductor_x86
Needs: numpy
"""
import json, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_pt2e_ops import im2col, fma32_np  # noqa: E402

F32, F64, I64 = np.float32, np.float64, np.int64


def quantize_inductor(x, scale, zp, qmin, qmax):
    """Inductor's quantize_per_tensor kernel: c = f32(1.0 / scale) with the division in
    f64 (a Python constant in the generated C++), y = clamp(round(x * c) + zp, qmin, qmax),
    round = _mm512_roundscale_ps / nearbyint (half to even)"""
    c = F32(1.0 / F64(scale))
    v = np.rint((x.astype(F32) * c).astype(F32)) + F32(zp)
    return np.clip(v, qmin, qmax).astype(I64)


def accumulate(case, xq, wq):
    zx = case["act_qparams"][0]["zero_point"]
    w = wq.astype(I64)
    if case["op"] == "linear":
        return (xq - zx) @ w.T
    o, cg, kh, kw = w.shape
    g = case["groups"]
    cols, oh, ow = im2col(xq, kh, kw, case["stride"], case["padding"], case["dilation"], zx)
    cols = cols - zx
    n = xq.shape[0]
    acc = np.zeros((n, o, oh, ow), dtype=I64)
    og = o // g
    for gi in range(g):
        cc = cols[:, gi * cg:(gi + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        acc[:, gi * og:(gi + 1) * og] = np.einsum("ok,nkp->nop", w[gi * og:(gi + 1) * og].reshape(og, -1), cc).reshape(n, og, oh, ow)
    return acc


def bshape(v, acc):
    return v.reshape((1, -1) + (1,) * (acc.ndim - 2))


def candidates_f32(acc, si, ws, b):
    a = acc.astype(F32)
    sc = bshape((F32(si) * ws).astype(F32), acc)
    bb = bshape(b, acc)
    wsb = bshape(ws, acc)
    return {
        "acc*f32(si*ws) + b": ((a * sc).astype(F32) + bb).astype(F32),
        "fma(acc, f32(si*ws), b)": fma32_np(a, sc, bb),
        "(acc*si)*ws + b": (((a * F32(si)).astype(F32) * wsb).astype(F32) + bb).astype(F32),
        "(acc*ws)*si + b": (((a * wsb).astype(F32) * F32(si)).astype(F32) + bb).astype(F32),
    }


def candidates_u8(acc, si, ws, b, so, zo, lo, hi):
    out = {}
    inv_f32 = F32(F32(1.0) / F32(so))
    inv_f64 = F32(1.0 / F64(so))
    for tname, t in candidates_f32(acc, si, ws, b).items():
        for iname, inv in (("f32(1/so)", inv_f32), ("f32(1.0/so f64)", inv_f64)):
            v = (t * inv).astype(F32)
            out[f"rint(({tname}) * {iname}) + zo"] = np.clip(np.rint(v) + zo, lo, hi)
            out[f"rint(({tname}) * {iname} + zo)"] = np.clip(np.rint((v + F32(zo)).astype(F32)), lo, hi)
            out[f"rint(fma({tname}, {iname}, zo))"] = np.clip(np.rint(fma32_np(t, inv, F32(zo))), lo, hi)
        out[f"rint(({tname}) / so) + zo"] = np.clip(np.rint((t / F32(so)).astype(F32)) + zo, lo, hi)
        out[f"rint(({tname}) / so + zo)"] = np.clip(np.rint(((t / F32(so)).astype(F32) + F32(zo)).astype(F32)), lo, hi)
    # the same with other tie breaks, to show that ties occur and are broken to even
    t = candidates_f32(acc, si, ws, b)["(acc*si)*ws + b"]
    v = (t * F32(F32(1.0) / F32(so))).astype(F32)
    out["half-away(((acc*si)*ws + b) * f32(1/so)) + zo"] = np.clip(np.sign(v) * np.floor(np.abs(v) + F32(0.5)) + zo, lo, hi)
    out["half-up(((acc*si)*ws + b) * f32(1/so)) + zo"] = np.clip(np.floor(v + F32(0.5)) + zo, lo, hi)
    ties = (v - np.floor(v) == 0.5) & (np.rint(v) + zo >= lo) & (np.rint(v) + zo <= hi)
    print(f"    ({int(ties.sum())} of {v.size} outputs are exact .5 ties inside the output range)")
    return out


RULE_F32 = "(acc*si)*ws + b"
RULE_U8 = "rint(((acc*si)*ws + b) * f32(1/so) + zo)"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    verbose = "-v" in sys.argv
    root = args[0]
    dirs = sorted(os.path.join(root, d) for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))
    totals = {}
    npass = nfail = 0
    for d in dirs:
        case = json.load(open(os.path.join(d, "case.json")))
        t = {f[:-4]: np.load(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".npy")}
        qa = case["act_qparams"]
        si, zi = qa[0]["scale"], qa[0]["zero_point"]
        xq = quantize_inductor(t["input"], si, zi, qa[0]["qmin"], qa[0]["qmax"])
        acc = accumulate(case, xq, t["weight_q"])
        ws, b = t["weight_scale"].astype(F32), t["bias"].astype(F32)
        y = t["output"]
        lines = []
        if len(qa) >= 2:
            so, zo = qa[1]["scale"], qa[1]["zero_point"]
            lo, hi = qa[1]["qmin"], qa[1]["qmax"]
            yq = np.clip(np.rint(y.astype(F64) / so) + zo, 0, 255).astype(I64)
            back = ((yq - zo).astype(F32) * F32(so)).astype(F32)
            assert np.array_equal(back.view(np.int32), y.view(np.int32)), "output is not dequantized u8"
            if case["relu"]:
                lo = max(lo, zo)
            cands = candidates_u8(acc, si, ws, b, so, zo, lo, hi)
            rule, unit = RULE_U8, "step(s)"
            for k, v in cands.items():
                dd = np.abs(v.astype(I64) - yq)
                totals.setdefault(k, []).append(bool((dd == 0).all()))
                lines.append((float((dd == 0).mean()), int(dd.max()), k))
        else:
            cands = candidates_f32(acc, si, ws, b)
            rule, unit = RULE_F32, "ulp"
            for k, v in cands.items():
                if case["relu"]:
                    v = np.maximum(v, 0)
                du = np.abs(v.view(np.int32).astype(I64) - y.astype(F32).view(np.int32).astype(I64))
                totals.setdefault(k, []).append(bool((du == 0).all()))
                lines.append((float((du == 0).mean()), int(du.max()), k))
        ex, mx, _ = [l for l in lines if l[2] == rule][0]
        ok = ex == 1.0
        npass += ok
        nfail += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case['name']:<26} {case['op']}, {'u8' if len(qa) >= 2 else 'f32'} out, "
              f"{y.size} outputs, |acc| <= {int(np.abs(acc).max())}: {ex * 100:.3f}% exact, max {mx} {unit}; "
              f"eager pt2e equal {case['eager_equal_fraction'] * 100:.1f}%")
        if verbose:
            for e, m, k in sorted(lines, key=lambda l: -l[0]):
                print(f"      {e * 100:8.3f}% exact, max {m:5d} {unit}   {k}")
    print("candidates exact on every case they apply to:")
    for k, v in totals.items():
        if all(v):
            print("   ", k, f"({len(v)} cases)")
    print(f"rule: f32 out {RULE_F32}; u8 out {RULE_U8}")
    print(f"{npass} passed, {nfail} failed")
    sys.exit(1 if nfail else 0)


if __name__ == "__main__":
    main()
