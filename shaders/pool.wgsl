// Pooling on quint8 NHWC4 tensors, with PyTorch's quantized rounding (see
// tests/data/ops/README.md and src/ops/pool/mod.rs, whose CPU loop reads the
// same uniforms and table). MODE: 0 max_pool2d, 1 avg_pool2d,
// 2 adaptive_avg_pool2d, 3 mean over H and W. Divisions by data-dependent
// window sizes come from host tables (`tab`), never from WGSL's `/` on f32;
// the f32 mean divides a data value exactly in integers (div_exact).

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    oh: u32, ow: u32, total: u32, path: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, dh: u32, dw: u32,
    zp: i32, clamp_taps: u32, cip: u32, div_override: u32,
    nhwc_split: u32, m: f32, tab_w: u32, tab_half: u32,
    mean_path: u32, opaque: u32, mean_split: u32, scale: f32,
    inv: f32, pad0: u32, pad1: u32, pad2: u32,
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

// Dequantized input value `i` (flat over H*W) of channel c: s * f32(q - zp),
// one rounding. The xor with a runtime zero keeps the product from being fused
// into an FMA with the add that consumes it.
fn deq(b: u32, i: u32, c: u32) -> f32 {
    let v = p.scale * f32(byte_at(b, i / p.w, i % p.w, c) - p.zp);
    return bitcast<f32>(bitcast<u32>(v) ^ p.opaque);
}

// ATen's multi_row_sum for one column: values first + k * stride, k < n.
fn cascade(b: u32, c: u32, first: u32, stride: u32, n: u32) -> f32 {
    var cl2 = 1u;
    if n > 2u {
        cl2 = 32u - countLeadingZeros(n - 1u);
    }
    let lp = max(4u, cl2 / 4u);
    let step = 1u << lp;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var i = 0u;
    loop {
        if i + step > n {
            break;
        }
        for (var j = 0u; j < step; j++) {
            acc[0] = acc[0] + deq(b, first + i * stride, c);
            i++;
        }
        for (var j = 1u; j < 4u; j++) {
            acc[j] = acc[j] + acc[j - 1u];
            acc[j - 1u] = 0.0;
            if (i & ((step - 1u) << (j * lp))) != 0u {
                break;
            }
        }
    }
    for (; i < n; i++) {
        acc[0] = acc[0] + deq(b, first + i * stride, c);
    }
    return ((acc[0] + acc[1]) + acc[2]) + acc[3];
}

// ATen's row_sum: four interleaved cascades, the tail into the first, in order.
fn cascade_ilp4(b: u32, c: u32, n: u32) -> f32 {
    let m = n / 4u;
    var part = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var k = 0u; k < 4u; k++) {
        part[k] = cascade(b, c, k, 4u, m);
    }
    for (var i = 4u * m; i < n; i++) {
        part[0] = part[0] + deq(b, i, c);
    }
    return ((part[0] + part[1]) + part[2]) + part[3];
}

// s / f32(n), correctly rounded (WGSL's `/` is not): long division of the
// significand in integers, rounded half to even. s and the quotient are
// normal f32 (the host checks the scale), n < 2^31.
fn div_exact(s: f32, n: u32) -> f32 {
    if s == 0.0 {
        return s;
    }
    let bits = bitcast<u32>(s);
    let m = (bits & 0x7fffffu) | 0x800000u;
    let e = i32((bits >> 23u) & 0xffu) - 150; // |s| = m * 2^e
    // k extra bits make the quotient q = floor(m * 2^k / n) 26 or 27 bits long.
    let k = (32u - countLeadingZeros(n)) + 2u;
    var q = m / n;
    var r = m % n;
    for (var i = 0u; i < k; i++) {
        r = r << 1u;
        q = q << 1u;
        if r >= n {
            r -= n;
            q |= 1u;
        }
    }
    let sh = (32u - countLeadingZeros(q)) - 24u;
    var mant = q >> sh;
    let rem = q & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    if rem > half || (rem == half && (r != 0u || (mant & 1u) == 1u)) {
        mant += 1u;
    }
    let v = ldexp(f32(mant), e - i32(k) + i32(sh));
    return select(v, -v, (bits >> 31u) == 1u);
}

fn mean_hw(b: u32, c: u32) -> i32 {
    let n = p.h * p.w;
    if p.mean_path == 2u {
        var s: f32;
        if c < p.mean_split {
            s = cascade(b, c, 0u, 1u, n);
        } else {
            s = cascade_ilp4(b, c, n);
        }
        // rule Q: the zero point after rounding (clamped by the caller)
        return i32(round(div_exact(s, n) * p.inv)) + p.zp;
    }
    var sum = 0u;
    for (var iy = 0u; iy < p.h; iy++) {
        for (var ix = 0u; ix < p.w; ix++) {
            sum += u32(byte_at(b, iy, ix, c));
        }
    }
    if p.mean_path == 1u {
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
