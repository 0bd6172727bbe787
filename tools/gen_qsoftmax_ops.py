#!/usr/bin/env python3
"""Vectors for PyTorch's quantized softmax (quantized::softmax, the nnq.Softmax module
FX and eager produce), exported as qfuse's `qsoftmax` (tests/data/qsoftmax, checked by
tests/qsoftmax.rs without Python), under the engines fbgemm, x86 and qnnpack.

Each case holds a random quint8 input (NCHW order; PyTorch held it channels-last in the
`_cl` cases, as a conv output is), the dim, the output qparams and PyTorch's output
(NCHW order). Rules (tests/data/ops/README.md, "qsoftmax"): engine qnnpack with output
(1/256, 0) runs QNNPACK's integer softargmax (any dim); every other case
dequantize -> at::softmax -> quantize. The `atendim_*` cases (--dim-cases) run ATen's
float softmax over a dim other than the last under a given intra-op thread count
(torch.set_num_threads; spec "threads"), and also hold `softmax_f32`, at::softmax of the
dequantized input at that thread count (NCHW order), which pins the float rule itself.

    /work/venv/bin/python tools/gen_qsoftmax_ops.py tests/data/qsoftmax --seed 1
    /work/venv/bin/python tools/gen_qsoftmax_ops.py tests/data/qsoftmax --dim-cases --seed 2
"""
import argparse
import json
import os
import random
import warnings

import numpy as np
import torch
from safetensors.numpy import save_file

warnings.filterwarnings("ignore")


def f32(v):
    return float(np.float32(v))


def case(rng, g, name, engine, shape, dim, out, cl=False, spread=None, threads=None):
    s_in = f32(rng.uniform(0.005, 0.3))
    z_in = rng.randint(0, 255)
    spread = spread or rng.uniform(0.5, 30)
    x = torch.randn(*shape, generator=g) * spread
    qx = torch.quantize_per_tensor(x, s_in, z_in, torch.quint8)
    if cl:
        qx = qx.contiguous(memory_format=torch.channels_last)
    torch.backends.quantized.engine = engine
    so, zo = out
    if threads is not None:
        torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
    y = torch.ops.quantized.softmax(qx, dim, so, zo)
    assert abs(y.q_scale() - so) < 1e-12 and y.q_zero_point() == zo
    f = None
    if threads is not None:
        f = torch.softmax(qx.dequantize(), dim).contiguous()
        # the float tensor is what quantized::softmax quantizes
        assert torch.equal(torch.quantize_per_tensor(f, so, zo, torch.quint8).int_repr(), y.int_repr())
    spec = {"op": "qsoftmax", "engine": engine, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_version": torch.__version__, "cpu_avx512_vnni": True, "shape": list(shape), "dim": dim,
            "input_scale": s_in, "input_zero_point": z_in, "output_scale": so, "output_zero_point": zo,
            "input_layout": "channels_last" if cl else "contiguous"}
    t = {"input": qx.int_repr().contiguous().numpy().astype(np.uint8).reshape(-1),
         "output": y.int_repr().contiguous().numpy().astype(np.uint8).reshape(-1)}
    if threads is not None:
        spec["threads"] = threads
        spec["glibc"] = os.confstr("CS_GNU_LIBC_VERSION")
        t["softmax_f32"] = f.numpy().astype(np.float32).reshape(-1)
    return name, spec, t


def dim_cases(rng, g):
    """ATen's float path over a dim other than the last, at several thread counts."""
    fixed = (2.0 ** -8, 0)
    cases, k = [], 0
    for shape, dim, threads, cl in [((2, 21, 13, 11), 1, 1, False), ((2, 21, 13, 11), 1, 3, False),
                                    ((2, 21, 13, 11), 1, 4, True), ((2, 21, 13, 11), 1, 7, False),
                                    ((1, 21, 17, 19), 1, 2, False), ((1, 21, 17, 19), 1, 5, True),
                                    ((2, 5, 40, 3), 2, 3, False), ((3, 10, 7), 1, 2, False),
                                    ((2, 4, 37), 1, 3, False), ((1, 6, 24, 40), 1, 16, False),
                                    ((1, 8, 33, 5), 2, 4, False), ((2, 3, 20, 18), 2, 3, True),
                                    ((1, 19, 32, 32), 1, 16, True), ((2, 12, 9, 9), 1, 2, False)]:
        for engine in ["fbgemm", "x86", "qnnpack"]:
            if engine == "qnnpack" and rng.random() < 0.6:
                continue
            out = fixed if (engine != "qnnpack" and rng.random() < 0.6) else \
                (f32(rng.uniform(0.001, 0.01)), rng.randint(0, 40))
            if engine == "qnnpack" and out == fixed:
                continue
            cases.append(case(rng, g, f"atendim_{engine}_{k:03d}", engine, shape, dim, out, cl,
                              threads=threads))
            k += 1
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dim-cases", action="store_true",
                    help="write only the atendim_* cases (ATen over a dim other than the last)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    if a.dim_cases:
        cases = dim_cases(rng, g)
        for name, spec, t in cases:
            save_file(t, os.path.join(a.out_dir, name + ".safetensors"), metadata={"spec": json.dumps(spec)})
        print(f"{len(cases)} cases in {a.out_dir}")
        return
    fixed = (2.0 ** -8, 0)
    cases = []
    k = 0
    # qnnpack's integer kernel: any dim, contiguous or channels-last, long rows (qscale < 8388607 past 512)
    for shape, dim, cl in [((3, 10), 1, False), ((2, 1000), -1, False), ((2, 600), 1, False),
                           ((2, 5, 3, 4), 1, False), ((2, 5, 3, 4), 1, True), ((1, 21, 6, 7), 1, True),
                           ((2, 6, 5, 7), -1, False), ((2, 6, 5, 7), 2, True), ((3, 17), 1, False)]:
        cases.append(case(rng, g, f"qnnpack_{k:03d}", "qnnpack", shape, dim, fixed, cl)); k += 1
    # ATen's float path over the last dim: fbgemm, x86, and qnnpack with other output qparams
    for engine in ["fbgemm", "x86", "qnnpack"]:
        for shape, cl in [((4, 1), False), ((4, 3), False), ((3, 15), False), ((3, 16), False), ((3, 17), False),
                          ((2, 33), False), ((2, 100), False), ((2, 1000), False), ((2, 4, 3, 10), False),
                          ((2, 4, 3, 21), True), ((1, 3, 2, 40), True)]:
            out = fixed if (engine != "qnnpack" and rng.random() < 0.5) else \
                (f32(rng.uniform(0.001, 0.01)), rng.randint(0, 40))
            if engine == "qnnpack" and out == fixed:
                continue
            cases.append(case(rng, g, f"aten_{engine}_{k:03d}", engine, shape, -1, out, cl)); k += 1
    for name, spec, t in cases:
        save_file(t, os.path.join(a.out_dir, name + ".safetensors"), metadata={"spec": json.dumps(spec)})
    print(f"{len(cases)} cases in {a.out_dir}")


if __name__ == "__main__":
    main()
