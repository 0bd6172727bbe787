// ONNX Runtime's float rules (tests/data/onnx/README.md), exact on the GPU;
// src/ops/ort/mod.rs runs the same uniforms and tables on the CPU. MODE:
// 0 QuantizeLinear (rule Q, f32 NCHW -> NHWC4), 1 QLinearGlobalAveragePool,
// 2 QLinearAveragePool, 3 QLinearSoftmax, 4 XNNPACK's mean over H, W
// (src/ops/xnnpack: no float arithmetic here, the host's thresholds),
// 5 ExecuTorch's portable adaptive_avg_pool2d / avg_pool2d quantized by XNNPACK,
// 6 XNNPACK's f32 global average of per-channel f32 values of the bytes
// (xnnpack_channel_mean), 7 XNNPACK's f32 average pooling of the dequantized
// bytes (xnnpack_avg_pool2d).
//
// Every division is `fdiv`: IEEE binary32 division correctly rounded to
// nearest even, in integer arithmetic on the bit patterns (WGSL's `/` on f32
// may be off by 2.5 ULP). Operands that could be subnormal are kept as u32
// bits (never loaded as f32), so subnormal inputs and results are exact too.
// The f32 operations left to the GPU are additions of values read from host
// tables, one multiplication (QLinearGlobalAveragePool) and round(): WGSL
// defines +, * and round() on f32 as correctly rounded; none of them feeds a
// multiplication into an addition (no FMA contraction is possible: the
// products and quotients that are added come from host tables or from
// integer code through bitcast).
//
// Subnormals (a GPU may flush them to zero in f32 arithmetic): fdiv and the
// quantize input never meet f32 arithmetic, so they are exact. A quotient
// that is subnormal is only rounded to an integer (+ a zero point), which
// gives the same as zero. The avg pool's dequantized bytes and every sum of
// them are 0 or normal (the host checks the input scale is in
// [2^-100, 2^100]). A softmax row's sum holds t(0) >= 1, beside which a
// subnormal term or a flushed partial sum below 2^-100 cannot change the
// rounded result; its quotient's dividend is read as bits.
//
// Host tables (`tab`, u32 bit patterns of f32): avg pool: tab[b] = the
// dequantized byte b, x_scale * f32(b - zp_x); softmax: tab[d] = t(d) and
// tab[256 + d] = t(d) * floor(1 / y_scale) for d = max - x (see mod.rs).

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    oh: u32, ow: u32, total: u32, axis: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    pt: u32, pl: u32, cip: u32, bits: u32,
    zp_in: i32, zp_out: i32, offset: i32, m: f32,
}

override WG: u32 = 64u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
// MODE 0: the f32 input's bit patterns; else packed NHWC4 bytes.
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> tab: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// fdiv: in the prelude float.wgsl (prepended by the context).

// rint(v) + zp for v = bitcast<f32>(bits), saturated to the bytes [lo, hi];
// a |v| >= 2^22 (or infinite) saturates by its sign.
fn round_add_sat(bits: u32, zp: i32, lo: i32, hi: i32) -> i32 {
    if (bits & 0x7fffffffu) >= 0x4a800000u {
        return select(hi, lo, (bits >> 31u) == 1u);
    }
    return clamp(i32(round(bitcast<f32>(bits))) + zp, lo, hi);
}

// f32(a), correctly rounded for every i32 (a plain f32(i32) may round either
// way past 2^24): both halves convert exactly, the one addition rounds.
fn exact_f32(a: i32) -> f32 {
    let lo = a & 0xffff;
    return f32(a - lo) + f32(lo);
}

fn byte_at(b: u32, iy: u32, ix: u32, c: u32) -> u32 {
    return (x[((b * p.h + iy) * p.w + ix) * p.c4 + c / 4u] >> (8u * (c % 4u))) & 0xffu;
}

// rule Q: sat(rint(x / s) + zp); p.bits holds s.
fn quantize(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let v = x[((b * p.c + c) * p.h + oy) * p.w + ox];
    return round_add_sat(fdiv(v, p.bits), p.zp_out, 0, 255);
}

// acc = Σq - zp_x·N (i32), sat(rint(f32(acc) * m) + zp_y)
fn global_avg(b: u32, c: u32) -> i32 {
    var sum = 0u;
    for (var iy = 0u; iy < p.h; iy++) {
        for (var ix = 0u; ix < p.w; ix++) {
            sum += byte_at(b, iy, ix, c);
        }
    }
    let acc = i32(sum) - p.zp_in * i32(p.h * p.w);
    let r = round(exact_f32(acc) * p.m);
    return i32(clamp(r, f32(-p.zp_out), f32(255 - p.zp_out))) + p.zp_out;
}

// XNNPACK's mean: the stored byte is the number of the 255 ascending host
// thresholds (tab) at or below the byte sum of the plane (binary search).
fn xnn_mean(b: u32, c: u32) -> i32 {
    var sum = 0u;
    for (var iy = 0u; iy < p.h; iy++) {
        for (var ix = 0u; ix < p.w; ix++) {
            sum += byte_at(b, iy, ix, c);
        }
    }
    var lo = 0u;
    var hi = 255u;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        if tab[mid] <= sum {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return i32(lo);
}

// ExecuTorch's portable adaptive_avg_pool2d / avg_pool2d: host windows
// (tab[256 + oy], tab[256 + oh + ox]: start | end << 16), f32 sum of the
// dequantized taps (tab[b]) from 0.0, rows then columns, v = sum / f32(count)
// (fdiv; count = p.kh (divisor_override) when not 0, else the product of the
// host factors tab[256 + oh + ow + oy] * tab[256 + 2 oh + ow + ox]), then
// XNNPACK's quantize sat(rint(v * p.m) + zp) (one correctly rounded product).
fn portable_adaptive(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let ry = tab[256u + oy];
    let rx = tab[256u + p.oh + ox];
    let h0 = ry & 0xffffu;
    let h1 = ry >> 16u;
    let w0 = rx & 0xffffu;
    let w1 = rx >> 16u;
    var sum = 0.0;
    for (var iy = h0; iy < h1; iy++) {
        for (var ix = w0; ix < w1; ix++) {
            sum = sum + bitcast<f32>(tab[byte_at(b, iy, ix, c)]);
        }
    }
    var count = p.kh;
    if (count == 0u) {
        count = tab[256u + p.oh + p.ow + oy] * tab[256u + 2u * p.oh + p.ow + ox];
    }
    let v = fdiv(bitcast<u32>(sum), bitcast<u32>(f32(count)));
    return round_add_sat(bitcast<u32>(bitcast<f32>(v) * p.m), p.zp_out, 0, 255);
}

// xnnpack_channel_mean: tab[c * 256 + byte] holds the f32 value of a byte of
// channel c (host table: no zero or normal value is subnormal); XNNPACK's
// f32-rdsum order, one accumulator from 0.0 over the pixels in row-major
// order, times f32(1/N) (p.bits), then XNNPACK's convert sat(rint(v * p.m) +
// zp) (p.m = f32(1/s_out)). Two products, no addition after them (no FMA
// contraction possible); the sums are of host values.
fn xnn_channel_mean(b: u32, c: u32) -> i32 {
    var sum = 0.0;
    for (var iy = 0u; iy < p.h; iy++) {
        for (var ix = 0u; ix < p.w; ix++) {
            sum = bitcast<f32>(tab[c * 256u + byte_at(b, iy, ix, c)]) + sum;
        }
    }
    let v = sum * bitcast<f32>(p.bits);
    return round_add_sat(bitcast<u32>(v * p.m), p.zp_out, 0, 255);
}

// xnnpack_avg_pool2d: XNNPACK's f32 avgpool 9p kernel. tab[b] = the
// dequantized byte b; taps in the indirection order (column-major, t = kx *
// kh + ky), a tap in the padding +0.0; per pass of 9 taps (missing ones
// +0.0) s = ((i2+i3)+(i4+i5)) + (((i0+i1)+i8)+(i6+i7)), acc = acc + s from
// 0.0, written out so that nothing reassociates; then acc * f32(1/n) (fdiv;
// n = the taps inside the input) and XNNPACK's convert sat(rint(v * p.m) +
// zp). All sums are of host values; the two products feed no addition (no
// FMA contraction possible); every value is 0 or normal (host scale check).
fn xnn_avg_pool(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let y0 = i32(oy * p.sh) - i32(p.pt);
    let x0 = i32(ox * p.sw) - i32(p.pl);
    let k = p.kh * p.kw;
    var acc = 0.0;
    var n = 0u;
    for (var t0 = 0u; t0 < k; t0 += 9u) {
        var i: array<f32, 9>;
        for (var j = 0u; j < 9u; j++) {
            i[j] = 0.0;
            let t = t0 + j;
            if t < k {
                let iy = y0 + i32(t % p.kh);
                let ix = x0 + i32(t / p.kh);
                if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                    i[j] = bitcast<f32>(tab[byte_at(b, u32(iy), u32(ix), c)]);
                    n += 1u;
                }
            }
        }
        let s018 = (i[0] + i[1]) + i[8];
        let s23 = i[2] + i[3];
        let s45 = i[4] + i[5];
        let s67 = i[6] + i[7];
        let s2345 = s23 + s45;
        let s01678 = s018 + s67;
        acc = acc + (s2345 + s01678);
    }
    let inv = fdiv(bitcast<u32>(1.0), bitcast<u32>(f32(n)));
    let v = acc * bitcast<f32>(inv);
    return round_add_sat(bitcast<u32>(v * p.m), p.zp_out, 0, 255);
}

// f32 window sum of dequantized taps from 0.0 in row-major order,
// v = sum / f32(count), sat(rint(v / y_scale + f32(zp_y))) with the true zp_y
// (p.zp_out), stored + p.offset; p.bits holds y_scale.
fn avg_pool(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let hs0 = i32(oy * p.sh) - i32(p.pt);
    let ws0 = i32(ox * p.sw) - i32(p.pl);
    let he = min(hs0 + i32(p.kh), i32(p.h));
    let we = min(ws0 + i32(p.kw), i32(p.w));
    let hs = max(hs0, 0);
    let ws = max(ws0, 0);
    var sum = 0.0;
    for (var iy = hs; iy < he; iy++) {
        for (var ix = ws; ix < we; ix++) {
            sum = sum + bitcast<f32>(tab[byte_at(b, u32(iy), u32(ix), c)]);
        }
    }
    let taps = u32(max(he - hs, 0) * max(we - ws, 0));
    let count = select(taps, p.kh * p.kw, p.cip != 0u);
    let v = fdiv(bitcast<u32>(sum), bitcast<u32>(f32(count)));
    let w = fdiv(v, p.bits);
    let lo = -p.offset;
    let hi = 255 - p.offset;
    if (w & 0x7fffffffu) >= 0x4a800000u {
        return select(hi, lo, (w >> 31u) == 1u) + p.offset;
    }
    let r = round(bitcast<f32>(w) + f32(p.zp_out));
    return i32(clamp(r, f32(lo), f32(hi))) + p.offset;
}

// Byte k of the softmax row through (b, oy, ox, c) along p.axis.
fn row_at(b: u32, oy: u32, ox: u32, c: u32, k: u32) -> u32 {
    switch p.axis {
        case 0u: { return byte_at(b, oy, ox, k); }
        case 1u: { return byte_at(b, k, ox, c); }
        default: { return byte_at(b, oy, k, c); }
    }
}

// min(rint(t(m - x) * floor(1/y_scale) / sum) + zp_y, 255) on the images.
fn softmax(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    var n = p.c;
    if p.axis == 1u {
        n = p.h;
    } else if p.axis == 2u {
        n = p.w;
    }
    var m = 0u;
    for (var k = 0u; k < n; k++) {
        m = max(m, row_at(b, oy, ox, c, k));
    }
    var sum = 0.0;
    for (var k = 0u; k < n; k++) {
        sum = sum + bitcast<f32>(tab[m - row_at(b, oy, ox, c, k)]);
    }
    let d = m - byte_at(b, oy, ox, c);
    let q = fdiv(tab[256u + d], bitcast<u32>(sum));
    return round_add_sat(q, p.zp_out, 0, 255);
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
            case 0u: { v = quantize(b, oy, ox, c); }
            case 1u: { v = global_avg(b, c); }
            case 2u: { v = avg_pool(b, oy, ox, c); }
            case 4u: { v = xnn_mean(b, c); }
            case 5u: { v = portable_adaptive(b, oy, ox, c); }
            case 6u: { v = xnn_channel_mean(b, c); }
            case 7u: { v = xnn_avg_pool(b, oy, ox, c); }
            default: { v = softmax(b, oy, ox, c); }
        }
        word |= u32(v) << (8u * l);
    }
    y[idx] = word;
}
