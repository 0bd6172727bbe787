// ONNX Runtime's bilinear Resize (mode linear, cubic) and PyTorch's
// quantized bilinear upsampling (mode torch_bilinear) on quantized bytes, exact;
// src/ops/resize/mod.rs runs the same uniforms and table on the CPU and
// states the rule. One invocation per output word (NHWC4, 4 channels).
//
// Exactness: ORT's value is (((c11*X11 + c21*X21) + c12*X12) + c22*X22) in
// f32 with c11 = dx2*dy2, c21 = dx1*dy2, c12 = dx2*dy1, c22 = dx1*dy1. Every
// product here is `fmul`, IEEE binary32 multiplication correctly rounded to
// nearest even in integer arithmetic on the bit patterns: its result comes
// from integer code through bitcast, so no compiler can contract a multiply
// into the following add (an FMA would round once instead of twice). The
// three additions are WGSL f32 `+`, correctly rounded. The division of rule
// Q is `fdiv` of the float prelude (float.wgsl, shared with ort.wgsl).
// Mode torch_bilinear (PyTorch's bilinear) is torch_bilinear() below. The
// host guarantees (ORT modes) that fmul's operands and results
// are zero or normal: nonzero weights are >= 2^-40, table values are 0 or
// >= 2^-40 in magnitude (input scale in [2^-40, 2^40]) and <= 255 * 2^40.
//
// Mode cubic (ORT's ResizeBiCubic, rule requantize only): per output the
// four rows `row = ((0 + c0*X) + c1*X) + ...` over the clamped columns, then
// `res = ((0 + row0*cy0) + row1*cy1) + ...`, every product `fmul`. Values
// below 2^-100 in magnitude never change a byte (the output scale is at
// least 2^-40, so they quantize to the zero point, and beside a larger sum
// they are below half an ulp), so fmul may flush products below 2^-126 and
// subnormal sums may flush.
//
// Host table (`tab`, u32): linear: per output row [y1, y2, dy1, dy2], per
// output column [x1, x2, dx1, dx2] (weights as f32 bits); cubic: per output
// row [floor(v) as i32, cy0..cy3], per output column [floor(v), cx0..cx3];
// then tab[T + b] = the value X of stored byte b (f32 bits),
// T = E * (oh + ow) with E = 4 (linear) or 5 (cubic).

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    oh: u32, ow: u32, total: u32, requant: u32,
    copy: u32, s_out: u32, zp_out: i32, offset: i32,
    cubic: u32, torch: u32, body: u32, pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> tab: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// fdiv, ffma: in the prelude float.wgsl (prepended by the context).

// a * b for f32 bit patterns that are zero or normal, correctly rounded to
// nearest even when the product is normal; a product below 2^-126 is
// flushed to a signed zero (such values cannot change an output byte: see
// the header).
fn fmul(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & 0x80000000u;
    if (a & 0x7fffffffu) == 0u || (b & 0x7fffffffu) == 0u {
        return sign;
    }
    let ma = (a & 0x7fffffu) | 0x800000u;
    let mb = (b & 0x7fffffu) | 0x800000u;
    var e = i32((a >> 23u) & 0xffu) + i32((b >> 23u) & 0xffu) - 127;
    // the 48-bit product ma * mb = hi * 2^24 + lo, from 12-bit halves
    let al = ma & 0xfffu;
    let ah = ma >> 12u;
    let bl = mb & 0xfffu;
    let bh = mb >> 12u;
    let mid = ah * bl + al * bh;
    let t = al * bl + ((mid & 0xfffu) << 12u);
    let lo = t & 0xffffffu;
    let hi = ah * bh + (mid >> 12u) + (t >> 24u);
    var mant: u32;
    var rem: u32;
    if hi >= 0x800000u {
        mant = hi;
        rem = lo;
        e = e + 1;
    } else {
        mant = (hi << 1u) | (lo >> 23u);
        rem = (lo << 1u) & 0xffffffu;
    }
    // rem is 24 bits below mant's last bit: half = 2^23
    if rem > 0x800000u || (rem == 0x800000u && (mant & 1u) == 1u) {
        mant = mant + 1u;
    }
    if e < 1 {
        return sign;
    }
    // a carry to 2^24 moves into the exponent field by the addition
    return sign | ((u32(e - 1) << 23u) + mant);
}

// rint(v) + zp for v = bitcast<f32>(bits), saturated to [0, 255].
fn round_add_sat(bits: u32, zp: i32) -> i32 {
    if (bits & 0x7fffffffu) >= 0x4a800000u {
        return select(255, 0, (bits >> 31u) == 1u);
    }
    return clamp(i32(round(bitcast<f32>(bits))) + zp, 0, 255);
}

fn byte_at(b: u32, iy: u32, ix: u32, c: u32) -> u32 {
    return (x[((b * p.h + iy) * p.w + ix) * p.c4 + c / 4u] >> (8u * (c % 4u))) & 0xffu;
}

fn finish(v: u32) -> i32 {
    if p.requant != 0u {
        return round_add_sat(fdiv(v, p.s_out), p.zp_out);
    }
    // truncation toward zero of a true value, stored + offset
    let t = clamp(i32(bitcast<f32>(v)), -p.offset, 255 - p.offset);
    return t + p.offset;
}

fn cubic(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    let t0 = 5u * (p.oh + p.ow);
    let ty = 5u * oy;
    let tx = 5u * (p.oh + ox);
    let fy = bitcast<i32>(tab[ty]);
    let fx = bitcast<i32>(tab[tx]);
    var res = 0.0;
    for (var i = 0; i < 4; i++) {
        let yy = u32(clamp(fy - 1 + i, 0, i32(p.h) - 1));
        var row = 0.0;
        for (var k = 0; k < 4; k++) {
            let xx = u32(clamp(fx - 1 + k, 0, i32(p.w) - 1));
            let v = tab[t0 + byte_at(b, yy, xx, c)];
            row = row + bitcast<f32>(fmul(tab[tx + 1u + u32(k)], v));
        }
        res = res + bitcast<f32>(fmul(bitcast<u32>(row), tab[ty + 1u + u32(i)]));
    }
    return finish(bitcast<u32>(res));
}

// PyTorch's quantized bilinear (mode torch_bilinear; rules in
// src/ops/resize/mod.rs and docs/MODEL_FORMAT.md). Table per output row
// [h0, h1, l0, l1] (indices, f32 weights), per output column [w0, w1, l0,
// l1], then the true values of the 256 bytes. Every product, sum and fused
// multiply-add is the float prelude's integer-exact one (fmul_exact,
// fadd_exact, ffma: one IEEE rounding each, so the driver can neither fuse
// the contiguous kernel's products into its sums nor split the NHWC
// kernel's fused ones).
fn torch_bilinear(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    if p.copy != 0u {
        return i32(byte_at(b, oy, ox, c));
    }
    let t0 = 4u * (p.oh + p.ow);
    let ty = 4u * oy;
    let tx = 4u * (p.oh + ox);
    let y0 = tab[ty];
    let y1 = tab[ty + 1u];
    let h0 = tab[ty + 2u];
    let h1 = tab[ty + 3u];
    let x0 = tab[tx];
    let x1 = tab[tx + 1u];
    let w0 = tab[tx + 2u];
    let w1 = tab[tx + 3u];
    let p00 = tab[t0 + byte_at(b, y0, x0, c)];
    let p01 = tab[t0 + byte_at(b, y0, x1, c)];
    let p10 = tab[t0 + byte_at(b, y1, x0, c)];
    let p11 = tab[t0 + byte_at(b, y1, x1, c)];
    if p.torch >= 3u {
        return torch_bilinear_float(p00, p01, p10, p11, h0, h1, w0, w1, c);
    }
    var r: u32;
    if p.torch == 1u {
        // contiguous (NCHW) kernel: plain f32, no FMA
        let a = fadd_exact(fmul_exact(w0, p00), fmul_exact(w1, p01));
        let bb = fadd_exact(fmul_exact(w0, p10), fmul_exact(w1, p11));
        r = fadd_exact(fmul_exact(h0, a), fmul_exact(h1, bb));
    } else if c < p.body {
        // NHWC kernel, vector body
        let a = ffma(w1, p01, fmul_exact(w0, p00));
        let bb = ffma(w1, p11, fmul_exact(w0, p10));
        r = ffma(h1, bb, fmul_exact(h0, a));
    } else {
        // NHWC kernel, scalar tail
        let a = ffma(w0, p00, fmul_exact(w1, p01));
        let bb = ffma(w0, p10, fmul_exact(w1, p11));
        r = ffma(h0, a, fmul_exact(h1, bb));
    }
    let zp = p.zp_out - p.offset;
    // r - f32(zp), |.| < 2^10: round() is exact, ties to even
    let v = bitcast<f32>(fadd_exact(r, bitcast<u32>(-f32(zp))));
    return clamp(i32(round(v)) + zp, -p.offset, 255 - p.offset) + p.offset;
}

// PyTorch's FLOAT bilinear between a dequantize and quantize_per_tensor
// (mode torch_bilinear_float): the table values are the dequantized f32 of
// the bytes; torch 3: ATen's generic kernel, t0 = fma(p00, w0, p01*w1),
// t1 = fma(p10, w0, p11*w1), r = fma(t0, h0, t1*h1); torch 4: its
// channels-last kernel, w00 = h0*w0 ..., channels below p.body
// r = fma(p00, w00, fma(p01, w01, fma(p11, w11, p10*w10))), the others
// r = fma(p11, w11, fma(p10, w10, fma(p00, w00, p01*w01))). Then
// sat(rint(r * s_out) + zp_out), s_out holding f32(1 / scale).
fn torch_bilinear_float(p00: u32, p01: u32, p10: u32, p11: u32, h0: u32, h1: u32, w0: u32, w1: u32, c: u32) -> i32 {
    var r: u32;
    if p.torch == 3u {
        let t0 = ffma(p00, w0, fmul_exact(p01, w1));
        let t1 = ffma(p10, w0, fmul_exact(p11, w1));
        r = ffma(t0, h0, fmul_exact(t1, h1));
    } else {
        let w00 = fmul_exact(h0, w0);
        let w01 = fmul_exact(h0, w1);
        let w10 = fmul_exact(h1, w0);
        let w11 = fmul_exact(h1, w1);
        if c < p.body {
            r = ffma(p00, w00, ffma(p01, w01, ffma(p11, w11, fmul_exact(p10, w10))));
        } else {
            r = ffma(p11, w11, ffma(p10, w10, ffma(p00, w00, fmul_exact(p01, w01))));
        }
    }
    return round_add_sat(fmul_exact(r, p.s_out), p.zp_out);
}

fn resize(b: u32, oy: u32, ox: u32, c: u32) -> i32 {
    if p.torch != 0u {
        return torch_bilinear(b, oy, ox, c);
    }
    if p.cubic != 0u && p.copy == 0u {
        return cubic(b, oy, ox, c);
    }
    let t0 = select(4u, 5u, p.cubic != 0u) * (p.oh + p.ow);
    if p.copy != 0u {
        let byte = byte_at(b, oy, ox, c);
        if p.requant == 0u {
            return i32(byte);
        }
        return finish(tab[t0 + byte]);
    }
    let ty = 4u * oy;
    let tx = 4u * (p.oh + ox);
    let y1 = tab[ty];
    let y2 = tab[ty + 1u];
    let x1 = tab[tx];
    let x2 = tab[tx + 1u];
    let dy1 = tab[ty + 2u];
    let dy2 = tab[ty + 3u];
    let dx1 = tab[tx + 2u];
    let dx2 = tab[tx + 3u];
    let x11 = tab[t0 + byte_at(b, y1, x1, c)];
    let x21 = tab[t0 + byte_at(b, y1, x2, c)];
    let x12 = tab[t0 + byte_at(b, y2, x1, c)];
    let x22 = tab[t0 + byte_at(b, y2, x2, c)];
    let p11 = bitcast<f32>(fmul(fmul(dx2, dy2), x11));
    let p21 = bitcast<f32>(fmul(fmul(dx1, dy2), x21));
    let p12 = bitcast<f32>(fmul(fmul(dx2, dy1), x12));
    let p22 = bitcast<f32>(fmul(fmul(dx1, dy1), x22));
    let v = ((p11 + p21) + p12) + p22;
    return finish(bitcast<u32>(v));
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
        word |= u32(resize(b, oy, ox, c)) << (8u * l);
    }
    y[idx] = word;
}
