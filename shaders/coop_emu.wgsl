// The matrix primitives of coop.wgsl emulated in plain WGSL, for adapters
// without cooperative matrices (tests run the kernel's indexing, staging,
// K chunking and epilogue with them on lavapipe). The host sets FR = 16
// and SG = 32: a "subgroup" is 32 consecutive invocations; lane l of it
// holds row l / 2, columns 8 * (l % 2) .. + 7 of each C fragment in two
// vec4s. An A or B fragment is its offset into `sa` / `sb`, read when
// multiplied: the kernel does not write them between its loads and its mma
// (a barrier separates staging and use). Values are f32 (int8 values and
// their sums below 2^24: exact).

alias half = f32;
alias CoopA = u32;
alias CoopB = u32;

struct CoopC {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

var<private> emu_lane: u32;

fn coop_lane(lid: u32) {
    emu_lane = lid % 32u;
}

fn c_zero() -> CoopC {
    return CoopC(vec4<f32>(0.0), vec4<f32>(0.0));
}

fn load_a(off: u32) -> CoopA {
    return off;
}

fn load_b(off: u32) -> CoopB {
    return off;
}

fn mma(a: CoopA, b: CoopB, c: CoopC) -> CoopC {
    let r = emu_lane / 2u;
    let c0 = (emu_lane % 2u) * 8u;
    var lo = c.lo;
    var hi = c.hi;
    for (var k = 0u; k < 16u; k++) {
        let av = sa[a + r * KC + k];
        let o = b + k * TC + c0;
        lo += av * vec4<f32>(sb[o], sb[o + 1u], sb[o + 2u], sb[o + 3u]);
        hi += av * vec4<f32>(sb[o + 4u], sb[o + 5u], sb[o + 6u], sb[o + 7u]);
    }
    return CoopC(lo, hi);
}

fn c_store(c: CoopC, off: u32) {
    let r = emu_lane / 2u;
    let o = off + r * TC + (emu_lane % 2u) * 8u;
    sc[o] = c.lo.x;
    sc[o + 1u] = c.lo.y;
    sc[o + 2u] = c.lo.z;
    sc[o + 3u] = c.lo.w;
    sc[o + 4u] = c.hi.x;
    sc[o + 5u] = c.hi.y;
    sc[o + 6u] = c.hi.z;
    sc[o + 7u] = c.hi.w;
}
