// Benchmark only: the adapter's arithmetic ceilings, measured by loops that
// keep everything in registers (no memory traffic but one store per
// invocation, so nothing is optimised away).
//
// Every invocation runs `p.iters` iterations of its MODE's loop body; the
// host counts ops = invocations * iters * OPS_PER_ITER[MODE] (ceilings.rs,
// which also reports the counts it used):
//
//   MODE 0: int8 throughput (the ceiling): 16 independent i32 accumulators
//           (4 vec4s) `acc_k += dot4I8Packed(x, w_k)` against 16 weight
//           words, the activation word `x` changing every step (so nothing
//           can be hoisted or folded), 8 steps per iteration written out:
//           128 packed dots = 1024 int8 ops per iteration (a packed dot +
//           accumulate is 4 multiplies + 4 adds = 8 ops, what a DP4A does),
//           against 8 integer adds for `x` and the loop's own compare,
//           increment and branch (and naga's loop-bound counter).
//   MODE 1: f32 throughput (the ceiling): 16 independent FMA chains (4
//           vec4s) `a = fma(a, m, c)`, 8 steps per iteration written out:
//           128 FMAs = 256 flops per iteration.
//   MODE 2: int8, 8 dependent chains `a = dot4I8Packed(a, b) + a`, one
//           step per iteration (64 ops): latency-bound, reference only.
//   MODE 3: int8, the earlier throughput form: 8 accumulators, one step per
//           iteration (64 ops per iteration against an add for `x` and the
//           loop overhead): reference only.
//   MODE 4: f32, the earlier form: 8 FMA chains, one step per iteration
//           (16 flops): reference only.
//
// Why the unrolled forms: per loop iteration a GPU also issues the loop's
// compare, increment and branch (and the counter naga adds to every loop to
// bound it), on the same issue slots (and, for integers, the same pipe) as
// the arithmetic measured. With 8 operations per iteration that overhead
// can take a third or more of the issue slots; with 128 it is a few percent.
// 16 independent accumulators keep 16 operations in flight per invocation,
// which covers the arithmetic latency with a few resident warps per
// scheduler.

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

// The 4 packed dots of activation word `a` against 4 weight words.
fn dot4(a: u32, w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(a, w.x), dot4I8Packed(a, w.y), dot4I8Packed(a, w.z), dot4I8Packed(a, w.w));
}

fn int8_throughput16(seed: u32) -> u32 {
    var x = seed;
    let w0 = vec4<u32>(0x01ff02feu, 0x7f80017fu, 0x03fd04fcu, 0x05fb06fau) ^ vec4<u32>(seed);
    let w1 = vec4<u32>(0x07f908f8u, 0x09f70af6u, 0x0bf50cf4u, 0x0df30ef2u) ^ vec4<u32>(seed * 3u);
    let w2 = vec4<u32>(0x11ef12eeu, 0x13ed14ecu, 0x15eb16eau, 0x17e918e8u) ^ vec4<u32>(seed * 5u);
    let w3 = vec4<u32>(0x19e71ae6u, 0x1be51ce4u, 0x1de31ee2u, 0x21df22deu) ^ vec4<u32>(seed * 7u);
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    for (var i = 0u; i < p.iters; i++) {
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
        x += 0x01030507u;
        a0 += dot4(x, w0);
        a1 += dot4(x, w1);
        a2 += dot4(x, w2);
        a3 += dot4(x, w3);
    }
    let r = a0 ^ a1 ^ a2 ^ a3;
    return u32(r.x ^ r.y ^ r.z ^ r.w);
}

fn f32_throughput16(seed: u32) -> u32 {
    let m = vec4<f32>(0.999f + f32(seed & 7u) * 1e-6f);
    let c = vec4<f32>(1e-3f);
    let s = f32(seed & 255u);
    var a0 = vec4<f32>(s, s + 1.0f, s + 2.0f, s + 3.0f);
    var a1 = a0 + 4.0f;
    var a2 = a0 + 8.0f;
    var a3 = a0 + 12.0f;
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
    }
    let r = a0 + a1 + a2 + a3;
    return bitcast<u32>(r.x + r.y + r.z + r.w);
}

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

// The earlier throughput form: 8 independent accumulators
// `acc_k += dot4I8Packed(x, w_k)`, one step per iteration.
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
        r = int8_throughput16(seed);
    } else if MODE == 1u {
        r = f32_throughput16(seed);
    } else if MODE == 2u {
        r = int8_loop(seed);
    } else if MODE == 3u {
        r = int8_throughput(seed);
    } else {
        r = f32_loop(seed);
    }
    // Stored only where it cannot be predicted, so the loops must run.
    if r == p.seed + 0x9e3779b9u {
        out[idx % arrayLength(&out)] = r;
    }
}
