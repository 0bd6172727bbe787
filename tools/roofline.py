#!/usr/bin/env python3
"""Roofline picture of a qfuse benchmark run.

    python tools/roofline.py BENCH.json [MORE.json ...] OUT.png

BENCH.json is what `cargo run --release --example bench -- --json BENCH.json`
writes (several files, e.g. one per network from tools/device_bench.sh, are
merged; the ceilings and peaks are taken from the first). Every per-layer
row becomes a point: arithmetic intensity (ops per byte moved, as the
harness computes it: 2 x MACs over input + weights + output bytes, int8
bytes for the int8 layer, f32 bytes for the f32 layer) against the achieved
op/s, log-log. int8 layers are circles, tiled f32 layers triangles (the
tiled f32 baseline; depthwise layers run the simple f32 kernel there), one
colour per batch size; ResNet-18 filled, other networks hollow.

Roofs: solid, the measured ceilings (int8 dot4I8Packed loop, f32 FMA loop,
copy bandwidth); dashed, the chip's specified peaks when the JSON has them
(int8 packed dot, f32 FMA, f16 tensor core dense, memory bandwidth).

Needs matplotlib (not numpy). CI never runs it.
"""

import json
import sys


def load(paths):
    runs = [json.load(open(p)) for p in paths]
    base = runs[0]
    layers = []
    for r in runs:
        for net in r.get("networks", []):
            for layer in net.get("layers", []):
                layers.append((net["name"], layer))
    return base, layers


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    *inputs, out = argv[1:]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, layers = load(inputs)
    if not layers:
        print("no per-layer rows in " + ", ".join(inputs) + " (was it run with --skip-layers?)", file=sys.stderr)
        return 1
    c = base["ceilings"]
    spec = base.get("spec_peaks") or {}

    pts = []  # (kind, net, batch, intensity, rate)
    for net, l in layers:
        if l["int8_bytes"] > 0 and l["int8_ops_per_s"] > 0:
            # Layers that run on the tensor cores get their own marker, and
            # their packed-dot run (same intensity) is plotted beside them.
            kind = "coop" if l.get("coop") else "int8"
            pts.append((kind, net, l["batch"], l["ops"] / l["int8_bytes"], l["int8_ops_per_s"]))
            pd = l.get("packed_dot") or {}
            if pd.get("ops_per_s"):
                pts.append(("int8", net, l["batch"], l["ops"] / l["int8_bytes"], pd["ops_per_s"]))
        fb = l.get("f32_bytes")
        fr = l.get("f32_tiled_flops_per_s")
        if fb and fr:
            pts.append(("f32", net, l["batch"], l["ops"] / fb, fr))
    xs = [p[3] for p in pts]
    ys = [p[4] for p in pts]
    x_lo, x_hi = min(xs) / 2, max(xs) * 4
    roof_rates = [c["int8_ops_per_s"], c["f32_flops_per_s"]] + [
        v for v in (spec.get("int8_ops_per_s"), spec.get("f32_flops_per_s"), spec.get("f16_tensor_flops_per_s")) if v
    ]
    y_lo, y_hi = min(ys) / 3, max(roof_rates + ys) * 2

    fig, ax = plt.subplots(figsize=(14, 7.5))
    ax.set_xscale("log")
    ax.set_yscale("log")

    def roof(bw, top, style, color, label):
        # min(top, bw * x), drawn from x_lo to x_hi with its knee.
        knee = top / bw
        xs_ = [x_lo] + ([knee] if x_lo < knee < x_hi else []) + [x_hi]
        ax.plot(xs_, [min(top, bw * x) for x in xs_], style, color=color, lw=1.6, label=label)

    bw = c["copy_bytes_per_s"]
    roof(bw, c["int8_ops_per_s"], "-", "black",
         f"measured: int8 loop {c['int8_ops_per_s'] / 1e12:.3g} Top/s, copy {bw / 1e9:.3g} GB/s")
    roof(bw, c["f32_flops_per_s"], "-", "dimgray", f"measured: f32 FMA loop {c['f32_flops_per_s'] / 1e12:.3g} Tflop/s")
    sbw = spec.get("mem_bytes_per_s")
    for key, color, what in (
        ("int8_ops_per_s", "black", "int8 packed dot"),
        ("f32_flops_per_s", "dimgray", "f32 FMA"),
        ("f16_tensor_flops_per_s", "tab:purple", "f16 tensor core dense"),
    ):
        v = spec.get(key)
        if not v:
            continue
        label = f"specified ({spec.get('chip', '?')}): {what} {v / 1e12:.4g} T/s"
        if sbw:
            roof(sbw, v, "--", color, label)
        else:
            ax.plot([x_lo, x_hi], [v, v], "--", color=color, lw=1.2, label=label)
    if sbw:
        ax.plot([], [], " ", label=f"specified memory bandwidth {sbw / 1e12:.3g} TB/s (dashed diagonal)")

    batches = sorted({p[2] for p in pts})
    cmap = plt.get_cmap("viridis" if len(batches) > 4 else "tab10")
    colors = {b: cmap(i / max(1, len(batches) - 1)) if len(batches) > 4 else cmap(i) for i, b in enumerate(batches)}
    markers = {"int8": "o", "f32": "^", "coop": "D"}
    for kind in ("f32", "int8", "coop"):
        for b in batches:
            for filled in (True, False):
                sel = [p for p in pts if p[0] == kind and p[2] == b and (p[1] == "resnet18") == filled]
                if not sel:
                    continue
                col = colors[b]
                ax.scatter(
                    [p[3] for p in sel],
                    [p[4] for p in sel],
                    marker=markers[kind],
                    s=34 if kind == "int8" else 30,
                    facecolors=col if filled else "none",
                    edgecolors=col,
                    linewidths=1.0,
                    alpha=0.85,
                )
    # Legend entries for the point styles.
    for b in batches:
        ax.scatter([], [], marker="s", color=colors[b], label=f"batch {b}")
    ax.scatter([], [], marker="o", facecolors="gray", edgecolors="gray", label="int8 layer (qfuse, op/s)")
    ax.scatter([], [], marker="^", facecolors="gray", edgecolors="gray", label="f32 tiled baseline layer (flop/s)")
    if any(p[0] == "coop" for p in pts):
        ax.scatter([], [], marker="D", facecolors="gray", edgecolors="gray", label="int8 layer on tensor cores (op/s)")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label="hollow: MobileNetV2 (filled: ResNet-18)")

    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("arithmetic intensity: ops per byte moved (input + weights + output)")
    ax.set_ylabel("achieved ops/s (2 x MACs per second)")
    a = base["adapter"]
    res = {n.get("resolution") for n in base.get("networks", [])}
    ax.set_title(
        f"qfuse roofline: {a['name']} ({a['backend']})"
        + (f", {'/'.join(str(r) for r in sorted(res))}px" if res else "")
        + (" --quick" if base.get("quick") else "")
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(
        f"wrote {out}: {sum(p[0] == 'int8' for p in pts)} packed-dot int8, "
        f"{sum(p[0] == 'coop' for p in pts)} tensor-core int8 and {sum(p[0] == 'f32' for p in pts)} f32 points"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
