// Pooling on quint8 NHWC4 tensors, with PyTorch's quantized rounding (see
// tests/data/ops/README.md and src/ops/pool/mod.rs, whose CPU loop reads the
// same uniforms and table). MODE: 0 max_pool2d, 1 avg_pool2d,
// 2 adaptive_avg_pool2d, 3 mean over H and W. Divisions by data-dependent
// window sizes come from host tables (`tab`), never from WGSL's `/` on f32.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    oh: u32, ow: u32, total: u32, path: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, dh: u32, dw: u32,
    zp: i32, clamp_taps: u32, cip: u32, div_override: u32,
    nhwc_split: u32, m: f32, tab_w: u32, tab_half: u32,
    qnnpack_mean: u32, opaque: u32, pad0: u32, pad1: u32,
}

// AvgPath in src/ops/pool/mod.rs
const QNNPACK: u32 = 0u;
const NHWC: u32 = 1u;
const NCHW: u32 = 2u;

override WG: u32 = 64u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> tab: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn byte_at(b: u32, iy: u32, ix: u32, c: u32) -> i32 {
    return i32((x[((b * p.h + iy) * p.w + ix) * p.c4 + c / 4u] >> (8u * (c % 4u))) & 0xffu);
}

fn max_pool(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    var m = 0;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            var iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            var ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
            if p.clamp_taps != 0u {
                iy = clamp(iy, 0, i32(p.h) - 1);
                ix = clamp(ix, 0, i32(p.w) - 1);
            } else if iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w) {
                continue;
            }
            m = max(m, byte_at(b, u32(iy), u32(ix), c));
        }
    }
    return m;
}

fn avg_pool(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    var hs = i32(oy * p.sh) - i32(p.ph);
    var ws = i32(ox * p.sw) - i32(p.pw);
    var he = min(hs + i32(p.kh), i32(p.h + p.ph));
    var we = min(ws + i32(p.kw), i32(p.w + p.pw));
    let pool_size = u32((he - hs) * (we - ws));
    hs = max(hs, 0);
    ws = max(ws, 0);
    he = min(he, i32(p.h));
    we = min(we, i32(p.w));
    var acc = 0;
    for (var iy = hs; iy < he; iy++) {
        for (var ix = ws; ix < we; ix++) {
            acc += byte_at(b, u32(iy), u32(ix), c) - p.zp;
        }
    }
    let size = u32(max(he - hs, 0) * max(we - ws, 0));
    var df = select(size, pool_size, p.cip != 0u);
    if p.div_override != 0u {
        df = p.div_override;
    }
    if p.path == QNNPACK {
        return i32(round(f32(acc) * p.m)) + p.zp;
    }
    if p.path == NHWC {
        let m = tab[df + select(p.tab_half, 0u, c < p.nhwc_split)];
        return i32(round(f32(acc) * m)) + p.zp;
    }
    // NCHW: two roundings, product then + zp. The product passes through an
    // integer xor with a runtime zero so that no compiler can fuse it into an FMA.
    let prod = bitcast<f32>(bitcast<u32>(f32(acc) * tab[df]) ^ p.opaque);
    return i32(round(prod + f32(p.zp)));
}

fn adaptive_pool(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let hs = (oy * p.h) / p.oh;
    let he = ((oy + 1u) * p.h + p.oh - 1u) / p.oh;
    let ws = (ox * p.w) / p.ow;
    let we = ((ox + 1u) * p.w + p.ow - 1u) / p.ow;
    var sum = 0;
    for (var iy = hs; iy < he; iy++) {
        for (var ix = ws; ix < we; ix++) {
            sum += byte_at(b, iy, ix, c);
        }
    }
    let kh = he - hs;
    let kw = we - ws;
    let r = tab[kh * p.tab_w + kw];
    if p.path == NHWC {
        let acc = sum - p.zp * i32(kh * kw);
        return i32(round(f32(acc) * r)) + p.zp;
    }
    return i32(round(f32(sum) * r));
}

fn mean_hw(b: u32, c: u32) -> i32 {
    var sum = 0u;
    for (var iy = 0u; iy < p.h; iy++) {
        for (var ix = 0u; ix < p.w; ix++) {
            sum += u32(byte_at(b, iy, ix, c));
        }
    }
    let n = p.h * p.w;
    if p.qnnpack_mean != 0u {
        let acc = i32(sum) - p.zp * i32(n);
        return i32(round(f32(acc) * p.m)) + p.zp;
    }
    // rint(f32(sum) / f32(n)) exactly, in integers: round half to even.
    let t = 2u * sum + n;
    var q = t / (2u * n);
    if t % (2u * n) == 0u && (q & 1u) == 1u {
        q -= 1u;
    }
    return i32(q);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
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
        if c >= p.c {
            break;
        }
        var v: i32;
        switch MODE {
            case 0u: { v = max_pool(b, oy, ox, c); }
            case 1u: { v = avg_pool(b, oy, ox, c); }
            case 2u: { v = adaptive_pool(b, oy, ox, c); }
            default: { v = mean_hw(b, c); }
        }
        word |= u32(clamp(v, 0, 255)) << (8u * l);
    }
    y[idx] = word;
}
