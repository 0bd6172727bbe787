// Inductor's generated C++ on f32 tensors, then its quantize (engine
// inductor_x86; src/ops/inductor/mod.rs runs the same rules on the CPU, rules
// in tests/data/pt2e/README.md, "Eltwise post-ops and squeeze-excitation").
// MODE: 0 hardsigmoid gate, 1 sigmoid gate (both: y = q(f32(g(v[n, c]) *
// x[n, c, h, w]))), 2 hardswish (y = q(f32(x * relu6(x + 3)) / 6)), 3 add
// (y = q(f32(x + v)), v of x's shape and layout).
//
// Inputs are f32 tensors as the GPU holds them: NHWC, channels padded to a
// multiple of 4, one f32 per word: element (n, c, h, w) is word
// ((n * H + h) * W + w) * 4 * c4 + c (c4 = ceil(C / 4)); the gate input v is
// [N, C, 1, 1] (word n * 4 * c4 + c). One invocation per packed NHWC4 output
// word (4 channels of one pixel).
//
// Every f32 operation goes through the float prelude (shaders/float.wgsl,
// compiled in front of this file): fadd_exact, fmul_exact, ffma (one
// rounding, no driver may contract or split it) and fdiv (correctly
// rounded), on bit patterns, so subnormals are never flushed either. Only
// max / min (of normal numbers or zeros) and round() run natively.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    total: u32, zp_out: i32, inv_bits: u32, pad0: u32,
}

override WG: u32 = 64u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

const F32_ONE: u32 = 0x3f800000u;
const F32_THREE: u32 = 0x40400000u;
const F32_SIX: u32 = 0x40c00000u;

// min(max(f32(a + 3), 0), 6) (at::vec::maximum / minimum).
fn relu6_plus3(a: u32) -> u32 {
    let r = bitcast<f32>(fadd_exact(a, F32_THREE));
    return bitcast<u32>(min(max(r, 0.0), 6.0));
}

// ---- sleef begin (tests/pt2e_inductor_se.rs compiles this section on its own) ----
// 2^e as f32 bits, -126 <= e <= 127.
fn pow2(e: i32) -> u32 {
    return u32(e + 127) << 23u;
}

// Sleef's expf_u10 (Sleef_expf16_u10, at::vec's exp), every multiply-add
// fused (src/ops/qsoftmax/mod.rs: sleef_expf_u10).
fn sleef_expf(d: u32) -> u32 {
    let df = bitcast<f32>(d);
    if df < -104.0 {
        return 0u;
    }
    if df > 100.0 {
        return F32_INF;
    }
    let q = i32(round(bitcast<f32>(fmul_exact(d, 0x3fb8aa3bu))));
    let qf = bitcast<u32>(f32(q));
    var s = ffma(qf, 0xbf317200u, d);
    s = ffma(qf, 0xb5bfbe8eu, s);
    var u = 0x39502bdau;
    u = ffma(u, s, 0x3ab696c9u);
    u = ffma(u, s, 0x3c0888a6u);
    u = ffma(u, s, 0x3d2aaa7au);
    u = ffma(u, s, 0x3e2aaaabu);
    u = ffma(u, s, 0x3f000000u);
    u = fadd_exact(F32_ONE, ffma(fmul_exact(s, s), u, s));
    let a = q >> 1u;
    return fmul_exact(fmul_exact(u, pow2(a)), pow2(q - a));
}
// ---- sleef end ----

// The gate of one channel's v2 (bits).
fn gate(b: u32) -> u32 {
    if MODE == 0u {
        return fdiv(relu6_plus3(b), F32_SIX);
    }
    let e = sleef_expf(b ^ 0x80000000u);
    return fdiv(F32_ONE, fadd_exact(F32_ONE, e));
}

// clamp(rint(f32(t * (1 / s))) + zp, 0, 255); NaN gives the zero point.
fn quantize_out(t: u32) -> u32 {
    let r = bitcast<f32>(fmul_exact(t, p.inv_bits));
    if r != r {
        return u32(clamp(p.zp_out, 0, 255));
    }
    if abs(r) >= 4194304.0 {
        return select(255u, 0u, r < 0.0);
    }
    return u32(clamp(i32(round(r)) + p.zp_out, 0, 255));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let c4 = idx % p.c4;
    let pix = idx / p.c4;
    let n = pix / (p.h * p.w);
    let stride = 4u * p.c4;
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let c = c4 * 4u + l;
        if c >= p.c {
            break;
        }
        let xv = x[pix * stride + c];
        var t: u32;
        if MODE == 2u {
            t = fdiv(fmul_exact(xv, relu6_plus3(xv)), F32_SIX);
        } else if MODE == 3u {
            t = fadd_exact(xv, v[pix * stride + c]);
        } else {
            t = fmul_exact(gate(v[n * stride + c]), xv);
        }
        word |= quantize_out(t) << (8u * l);
    }
    y[idx] = word;
}
