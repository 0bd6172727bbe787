#!/usr/bin/env python3
"""torchvision inception_v3 (the matrix's model and seed, X86InductorQuantizer) cut after one block,
with a 1x1 conv (16 channels, f32 graph output) as its head: thousands of outputs that depend on
every branch pool before the cut (the matrix's 10 logits are a weak check). Exports with
qfuse_export, runs `qfuse run` on the CPU (and the GPU with a third argument) and compares with
torch.compile bit for bit.

Usage: python3 tools/pt2e/indinc_inception_cut.py BLOCK SIZE [gpu]   (BLOCK: Mixed_5b, Mixed_5d,
    Mixed_6a, Mixed_6e, Mixed_7a or Mixed_7c; SIZE: input H = W, >= 75; $QFUSE: the qfuse CLI,
    default $CARGO_TARGET_DIR/release/qfuse)
2026-12-02 (x86-64 with AVX-512 VNNI, torch 2.15): Mixed_5d (19600 outputs), Mixed_6e (4624) and
Mixed_7c (1024) at 299x299 bit-exact on the CPU and the GPU (lavapipe).
"""
import os, sys, tempfile, types
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import test_pt2e_matrix as M
import qfuse_export
from test_pt2e_export import qfuse_run, compare
import inductor_oracle

cut, size, gpu = sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3
seed = list(M.MODELS).index("inception_v3")
m = M.build_model("inception_v3", seed)
names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
         "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
         "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
chans = {"Mixed_5d": 288, "Mixed_6e": 768, "Mixed_7c": 2048, "Mixed_5b": 256, "Mixed_6a": 768, "Mixed_7a": 1280}
torch.manual_seed(99)
m.head = nn.Conv2d(chans[cut], 16, 1)
def fwd(self, x):
    for n in names:
        x = getattr(self, n)(x)
        if n == cut:
            break
    return self.head(x)
m.forward = types.MethodType(fwd, m)
shape = (1, 3, size, size)
cm, x = M.quantize(m, shape, "x86_inductor", seed)
work = tempfile.mkdtemp()
mp = os.path.join(work, "m.safetensors")
h = qfuse_export.export(cm, x, mp)
ops = {}
for n in h["nodes"]:
    ops[n["op"]] = ops.get(n["op"], 0) + 1
print("nodes", len(h["nodes"]), ops, flush=True)
ref = inductor_oracle.compiled_output(cm, x)
xp, yp = os.path.join(work, "x.npy"), os.path.join(work, "y.npy")
np.save(xp, x.numpy())
for dev in ["cpu"] + (["gpu"] if gpu else []):
    got, err = qfuse_run(os.environ.get("QFUSE", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "qfuse")), mp, xp, yp, dev == "cpu")
    msg = f"qfuse run: {err}" if err else compare(got, ref)
    print(cut, size, dev, msg or f"{ref.size} outputs bit-exact", flush=True)
