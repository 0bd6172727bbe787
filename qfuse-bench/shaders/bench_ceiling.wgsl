// Benchmark only: the adapter's arithmetic ceilings, measured by loops that
// keep everything in registers (no memory traffic but one store per
// invocation, so nothing is optimised away).
//
//   MODE 0: int8: CHAINS independent chains of `a = dot4I8Packed(a, b) + a`.
//           Each step is one packed dot product plus one accumulate: 4
//           multiplies + 4 adds = 8 int8 ops (what a dp4a-style instruction does).
//   MODE 1: f32: CHAINS independent chains of `a = fma(a, m, c)`: 2 flops each.
//
// Every invocation runs `p.iters` steps of all 8 chains. The host counts
// ops = invocations * iters * 8 chains * (8 or 2).

struct CeilParams {
    iters: u32,
    seed: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: CeilParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn int8_loop(seed: u32) -> u32 {
    let b = 0x01ff02feu ^ seed;
    var a0 = i32(seed);
    var a1 = i32(seed * 3u);
    var a2 = i32(seed * 5u);
    var a3 = i32(seed * 7u);
    var a4 = i32(seed * 11u);
    var a5 = i32(seed * 13u);
    var a6 = i32(seed * 17u);
    var a7 = i32(seed * 19u);
    for (var i = 0u; i < p.iters; i++) {
        a0 = dot4I8Packed(u32(a0), b) + a0;
        a1 = dot4I8Packed(u32(a1), b) + a1;
        a2 = dot4I8Packed(u32(a2), b) + a2;
        a3 = dot4I8Packed(u32(a3), b) + a3;
        a4 = dot4I8Packed(u32(a4), b) + a4;
        a5 = dot4I8Packed(u32(a5), b) + a5;
        a6 = dot4I8Packed(u32(a6), b) + a6;
        a7 = dot4I8Packed(u32(a7), b) + a7;
    }
    return u32(a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7);
}

// The throughput form, as in a conv's register block: 8 independent
// accumulators `acc_k += dot4I8Packed(x, w_k)`, one activation word that
// changes every step (so nothing can be hoisted or folded) against 8 weight
// words. No step depends on the previous dot product, only on its own
// accumulator (one integer add of latency).
fn int8_throughput(seed: u32) -> u32 {
    var x = seed;
    let w0 = 0x01ff02feu ^ seed;
    let w1 = 0x7f80017fu ^ (seed * 3u);
    let w2 = 0x03fd04fcu ^ (seed * 5u);
    let w3 = 0x05fb06fau ^ (seed * 7u);
    let w4 = 0x07f908f8u ^ (seed * 11u);
    let w5 = 0x09f70af6u ^ (seed * 13u);
    let w6 = 0x0bf50cf4u ^ (seed * 17u);
    let w7 = 0x0df30ef2u ^ (seed * 19u);
    var a0 = 0;
    var a1 = 0;
    var a2 = 0;
    var a3 = 0;
    var a4 = 0;
    var a5 = 0;
    var a6 = 0;
    var a7 = 0;
    for (var i = 0u; i < p.iters; i++) {
        x += 0x01030507u;
        a0 += dot4I8Packed(x, w0);
        a1 += dot4I8Packed(x, w1);
        a2 += dot4I8Packed(x, w2);
        a3 += dot4I8Packed(x, w3);
        a4 += dot4I8Packed(x, w4);
        a5 += dot4I8Packed(x, w5);
        a6 += dot4I8Packed(x, w6);
        a7 += dot4I8Packed(x, w7);
    }
    return u32(a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7);
}

fn f32_loop(seed: u32) -> u32 {
    let m = 0.999f + f32(seed & 7u) * 1e-6f;
    let c = 1e-3f;
    var a0 = f32(seed & 255u);
    var a1 = a0 + 1.0f;
    var a2 = a0 + 2.0f;
    var a3 = a0 + 3.0f;
    var a4 = a0 + 4.0f;
    var a5 = a0 + 5.0f;
    var a6 = a0 + 6.0f;
    var a7 = a0 + 7.0f;
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    return bitcast<u32>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    let seed = idx * 2654435761u + p.seed;
    var r: u32;
    if MODE == 0u {
        r = int8_throughput(seed);
    } else if MODE == 1u {
        r = f32_loop(seed);
    } else {
        r = int8_loop(seed);
    }
    // Stored only where it cannot be predicted, so the loops must run.
    if r == p.seed + 0x9e3779b9u {
        out[idx % arrayLength(&out)] = r;
    }
}
