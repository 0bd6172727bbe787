// Exact IEEE binary32 arithmetic in integer code on f32 bit patterns, the
// prelude of `ort.wgsl` and `resize.wgsl` (Kernel::FLOAT_PRELUDE; the context
// prepends this file to those kernels, so the text exists once).
//
// Why: WGSL's f32 `*` and `+` are correctly rounded, but a driver may
// contract `a * b + c` into a fused multiply-add (one rounding instead of
// two), and WGSL's `fma()` may be a multiply then an add (two roundings)
// on Vulkan. Every result here comes from integer operations through
// bitcast, so no compiler can fuse or split a rounding.
//
// - fdiv(a, b): a / b, correctly rounded to nearest even; IEEE zeros,
//   infinities, NaN (one quiet NaN) and gradual underflow.
// - ffma(a, b, c): a * b + c with ONE rounding to nearest even (what C's
//   fmaf and Rust's f32::mul_add give); fmul_exact(a, b) = ffma(a, b, -0)
//   (a * b rounded once), fadd_exact(a, b) = ffma(a, 1, b) (a + b rounded
//   once). Subnormal operands are exact (normalized before the product),
//   results underflow gradually (subnormal results exact, no flush);
//   infinities and NaN follow IEEE (one quiet NaN; inf * 0 is NaN, inf - inf
//   is NaN); an exact zero sum is +0 unless both addends are -0.
//   tests/torch_upsample.rs checks ffma on the GPU against f32::mul_add.

// ---- fdiv begin (tests/ort_ops.rs compiles this section on its own) ----
const F32_NAN: u32 = 0x7fc00000u;
const F32_INF: u32 = 0x7f800000u;

// a / b for f32 bit patterns, correctly rounded to nearest even, with IEEE
// zeros, infinities, NaN (one quiet NaN) and gradual underflow (subnormal
// operands and results exact).
fn fdiv(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & 0x80000000u;
    var ea = i32((a >> 23u) & 0xffu);
    var eb = i32((b >> 23u) & 0xffu);
    var ma = a & 0x7fffffu;
    var mb = b & 0x7fffffu;
    if (ea == 255 && ma != 0u) || (eb == 255 && mb != 0u) {
        return F32_NAN;
    }
    let a_zero = (a & 0x7fffffffu) == 0u;
    let b_zero = (b & 0x7fffffffu) == 0u;
    if ea == 255 {
        return select(sign | F32_INF, F32_NAN, eb == 255);
    }
    if eb == 255 {
        return sign;
    }
    if a_zero {
        return select(sign, F32_NAN, b_zero);
    }
    if b_zero {
        return sign | F32_INF;
    }
    // significands in [2^23, 2^24): |a| = ma * 2^(ea - 150)
    if ea == 0 {
        let s = countLeadingZeros(ma) - 8u;
        ma = ma << s;
        ea = 1 - i32(s);
    } else {
        ma = ma | 0x800000u;
    }
    if eb == 0 {
        let s = countLeadingZeros(mb) - 8u;
        mb = mb << s;
        eb = 1 - i32(s);
    } else {
        mb = mb | 0x800000u;
    }
    var e = ea - eb;
    if ma < mb {
        ma = ma << 1u;
        e = e - 1;
    }
    // ma / mb in [1, 2): 25 quotient bits q = floor(ma / mb * 2^24), the
    // remainder r says whether the quotient is exact.
    var r = ma;
    var q = 0u;
    for (var i = 0u; i < 25u; i++) {
        q = q << 1u;
        if r >= mb {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    // |a / b| = q * 2^(e - 24); biased exponent of a normal result:
    let be = e + 127;
    if be >= 255 {
        return sign | F32_INF;
    }
    // bits to drop: 1 for a normal result, more for a subnormal one
    let sh = u32(max(1, 2 - be));
    if sh >= 26u {
        return sign; // below half the smallest subnormal
    }
    var mant = q >> sh;
    let rem = q & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    if rem > half || (rem == half && (r != 0u || (mant & 1u) == 1u)) {
        mant = mant + 1u;
    }
    // a normal mant carries its implicit bit into the exponent field; a
    // rounding carry (mant = 2^24, or 2^23 for a subnormal) moves up one
    // binade, to infinity past the largest finite value.
    let base = select(0u, u32(be - 1) << 23u, be >= 1);
    return sign | (base + mant);
}
// ---- fdiv end ----

// ---- ffma begin ----
// 64-bit unsigned integers as vec2<u32>(low word, high word).
fn u64_shl(v: vec2<u32>, s: u32) -> vec2<u32> {
    if s == 0u {
        return v;
    }
    if s >= 64u {
        return vec2<u32>(0u, 0u);
    }
    if s >= 32u {
        return vec2<u32>(0u, v.x << (s - 32u));
    }
    return vec2<u32>(v.x << s, (v.y << s) | (v.x >> (32u - s)));
}

// v >> s (s < 64).
fn u64_shr(v: vec2<u32>, s: u32) -> vec2<u32> {
    if s == 0u {
        return v;
    }
    if s >= 32u {
        return vec2<u32>(v.y >> (s - 32u), 0u);
    }
    return vec2<u32>((v.x >> s) | (v.y << (32u - s)), v.y >> s);
}

// v >> s with the bits shifted out ORed into bit 0 (the sticky bit).
fn u64_shr_sticky(v: vec2<u32>, s: u32) -> vec2<u32> {
    if s >= 64u {
        return vec2<u32>(select(0u, 1u, (v.x | v.y) != 0u), 0u);
    }
    var r = u64_shr(v, s);
    let back = u64_shl(r, s);
    if back.x != v.x || back.y != v.y {
        r.x = r.x | 1u;
    }
    return r;
}

fn u64_add(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

// a - b for a >= b.
fn u64_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn u64_ge(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

fn u64_clz(v: vec2<u32>) -> u32 {
    if v.y != 0u {
        return countLeadingZeros(v.y);
    }
    return 32u + countLeadingZeros(v.x);
}

// A finite nonzero f32 as (m, e): |x| = m * 2^(e - 150), m in [2^23, 2^24)
// (a subnormal normalized).
fn f32_unpack(x: u32) -> vec2<i32> {
    let e = i32((x >> 23u) & 0xffu);
    let m = x & 0x7fffffu;
    if e == 0 {
        let s = countLeadingZeros(m) - 8u;
        return vec2<i32>(i32(m << s), 1 - i32(s));
    }
    return vec2<i32>(i32(m | 0x800000u), e);
}

// sign | round(r * 2^eu) for r != 0, to nearest even, gradual underflow,
// overflow to infinity. A set bit 0 of r may be a sticky bit (the callers
// keep at least 30 bits below the rounding position then).
fn f32_round_pack(sign: u32, r: vec2<u32>, eu: i32) -> u32 {
    let k = 63 - i32(u64_clz(r)); // the top bit of r
    let e = k + eu; // 2^e <= |value| < 2^(e + 1)
    if e > 127 {
        return sign | F32_INF;
    }
    let lsb = max(e - 23, -149); // the exponent of the result's last bit
    let sh = lsb - eu;
    var mant: u32;
    if sh <= 0 {
        mant = r.x << u32(-sh); // r < 2^24 here: exact
    } else {
        if sh >= 63 {
            return sign; // r < 2^62 <= half of the last bit
        }
        let s = u32(sh);
        let q = u64_shr(r, s);
        mant = q.x;
        // the remainder r mod 2^s against half = 2^(s - 1)
        let rem = u64_sub(r, u64_shl(q, s));
        let half = u64_shl(vec2<u32>(1u, 0u), s - 1u);
        let above = rem.y > half.y || (rem.y == half.y && rem.x > half.x);
        let tie = rem.x == half.x && rem.y == half.y;
        if above || (tie && (mant & 1u) == 1u) {
            mant = mant + 1u;
        }
    }
    // a normal mant carries its implicit bit into the exponent field; a
    // rounding carry moves up one binade (to infinity past the largest).
    let base = select(0u, u32(e + 126) << 23u, e >= -126);
    return sign | (base + mant);
}

// a * b + c for f32 bit patterns, rounded once to nearest even.
fn ffma(a: u32, b: u32, c: u32) -> u32 {
    let sp = (a ^ b) & 0x80000000u;
    let sc = c & 0x80000000u;
    let aa = a & 0x7fffffffu;
    let ab = b & 0x7fffffffu;
    let ac = c & 0x7fffffffu;
    if aa > F32_INF || ab > F32_INF || ac > F32_INF {
        return F32_NAN;
    }
    if aa == F32_INF || ab == F32_INF {
        if aa == 0u || ab == 0u || (ac == F32_INF && sc != sp) {
            return F32_NAN;
        }
        return sp | F32_INF;
    }
    if ac == F32_INF {
        return c;
    }
    if aa == 0u || ab == 0u {
        if ac == 0u {
            return sp & sc;
        }
        return c;
    }
    let ua = f32_unpack(a);
    let ub = f32_unpack(b);
    // the exact 48-bit product of the significands, from 16-bit limbs
    let ma = u32(ua.x);
    let mb = u32(ub.x);
    let a0 = ma & 0xffffu;
    let a1 = ma >> 16u;
    let b0 = mb & 0xffffu;
    let b1 = mb >> 16u;
    let p00 = a0 * b0;
    let mid = a1 * b0 + a0 * b1; // < 2^25
    let lo = p00 + (mid << 16u);
    let hi = a1 * b1 + (mid >> 16u) + select(0u, 1u, lo < p00);
    // |a * b| = P * 2^ep, P in [2^46, 2^48); 13 guard bits below it
    let pm = u64_shl(vec2<u32>(lo, hi), 13u);
    let ep = ua.y + ub.y - 300 - 13;
    if ac == 0u {
        return f32_round_pack(sp, pm, ep);
    }
    // |c| = (mc << 37) * 2^ec, also in [2^60, 2^61)
    let uc = f32_unpack(c);
    let cm = vec2<u32>(0u, u32(uc.x) << 5u);
    let ec = uc.y - 150 - 37;
    // align the operand with the smaller unit to the larger one (sticky)
    var x = pm;
    var y = cm;
    var eu = ep;
    if ep >= ec {
        y = u64_shr_sticky(cm, u32(min(ep - ec, 64)));
    } else {
        x = u64_shr_sticky(pm, u32(min(ec - ep, 64)));
        eu = ec;
    }
    if sp == sc {
        return f32_round_pack(sp, u64_add(x, y), eu);
    }
    if x.x == y.x && x.y == y.y {
        return 0u; // exact cancellation: +0
    }
    if u64_ge(x, y) {
        return f32_round_pack(sp, u64_sub(x, y), eu);
    }
    return f32_round_pack(sc, u64_sub(y, x), eu);
}

// a * b rounded once (never contracted into a following addition).
fn fmul_exact(a: u32, b: u32) -> u32 {
    return ffma(a, b, 0x80000000u);
}

// a + b rounded once.
fn fadd_exact(a: u32, b: u32) -> u32 {
    return ffma(a, 0x3f800000u, b);
}
// ---- ffma end ----
