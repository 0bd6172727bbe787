// Pooling of f32 tensors (engine inductor_x86; src/ops/pool/float.rs):
// Inductor's C++ on oneDNN's f32 conv outputs (inception_v3's branch pools).
// Input: NHWC4F words (NHWC = true: an f32 tensor computed on the GPU, one
// f32 per word, channels padded to 4) or an NCHW float32 model input.
//
// MODE 0, max_pool2d: one output f32 word per invocation (NHWC4F, padding
//   channels 0.0); the tap with the largest value under IEEE's total order
//   (integer keys: no float compare), taps in the padding skipped.
// MODE 1, Inductor's avg_pool2d, quantized: four channels per invocation
//   (one packed quint8 word); per channel the window's taps inside the input
//   summed from +0.0 in row-major order, v = sum / f32(count), y =
//   clamp(rint(v * inv) + zp, 0, 255). The sum, the division and the product
//   are float.wgsl's exact IEEE operations (fadd_exact, fdiv, fmul_exact):
//   no contraction, no flush of subnormals.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    oh: u32, ow: u32, total: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, ph: u32,
    pw: u32, dh: u32, dw: u32, cip: u32,
    div: u32, zp: i32, inv: f32, pad: u32,
}

override WG: u32 = 64u;
override MODE: u32 = 0u;
override NHWC: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

fn load(b: u32, c: u32, iy: u32, ix: u32) -> u32 {
    if NHWC {
        return x[((b * p.h + iy) * p.w + ix) * 4u * p.c4 + c];
    }
    return x[((b * p.c + c) * p.h + iy) * p.w + ix];
}

// IEEE's total order of f32 bit patterns as an unsigned key.
fn order_key(v: u32) -> u32 {
    if (v & 0x80000000u) != 0u {
        return ~v;
    }
    return v | 0x80000000u;
}

fn max_at(b: u32, c: u32, oy: u32, ox: u32) -> u32 {
    var best = 0xff800000u; // -inf
    var key = order_key(best);
    let y0 = i32(oy * p.sh) - i32(p.ph);
    let x0 = i32(ox * p.sw) - i32(p.pw);
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = y0 + i32(ky * p.dh);
        if iy < 0 || iy >= i32(p.h) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = x0 + i32(kx * p.dw);
            if ix < 0 || ix >= i32(p.w) {
                continue;
            }
            let v = load(b, c, u32(iy), u32(ix));
            let k = order_key(v);
            if k > key {
                best = v;
                key = k;
            }
        }
    }
    return best;
}

// One dimension of an average pool's window: (start, end, factor).
fn window(o: u32, len: u32, k: u32, s: u32, pad: u32) -> vec3<i32> {
    let i0 = i32(o * s) - i32(pad);
    let i1 = min(i0 + i32(k), i32(len + pad));
    let c0 = max(i0, 0);
    let c1 = max(min(i1, i32(len)), c0);
    var f = c1 - c0;
    if p.cip != 0u {
        f = i1 - i0;
    }
    return vec3<i32>(c0, c1, f);
}

fn avg_at(b: u32, c: u32, oy: u32, ox: u32) -> u32 {
    let r = window(oy, p.h, p.kh, p.sh, p.ph);
    let q = window(ox, p.w, p.kw, p.sw, p.pw);
    var count = u32(r.z * q.z);
    if p.div != 0u {
        count = p.div;
    }
    var sum = 0u; // +0.0
    for (var iy = r.x; iy < r.y; iy++) {
        for (var ix = q.x; ix < q.y; ix++) {
            sum = fadd_exact(sum, load(b, c, u32(iy), u32(ix)));
        }
    }
    let v = fdiv(sum, bitcast<u32>(f32(count)));
    let t = bitcast<f32>(fmul_exact(v, bitcast<u32>(p.inv)));
    let rr = clamp(round(t), f32(-p.zp), f32(255 - p.zp));
    return u32(i32(rr) + p.zp);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    if MODE == 0u {
        let cw = 4u * p.c4;
        let c = idx % cw;
        let pix = idx / cw;
        let ox = pix % p.ow;
        let t = pix / p.ow;
        let oy = t % p.oh;
        let b = t / p.oh;
        var v = 0u;
        if c < p.c {
            v = max_at(b, c, oy, ox);
        }
        y[idx] = v;
        return;
    }
    let c4 = idx % p.c4;
    let pix = idx / p.c4;
    let ox = pix % p.ow;
    let t = pix / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let c = c4 * 4u + l;
        if c < p.c {
            word |= avg_at(b, c, oy, ox) << (8u * l);
        }
    }
    y[idx] = word;
}
