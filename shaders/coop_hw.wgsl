// The matrix primitives of coop.wgsl on cooperative matrices (tensor
// cores): FR x FR x FR fragments, f16 inputs, f32 accumulators, subgroup
// scope. The host puts `enable f16;` and `enable wgpu_cooperative_matrix;`
// at the top of the module, then the fragment types `CoopA`, `CoopB`,
// `CoopC` (`coop_mat16x16` or `coop_mat8x8`, Kernel::coop_shape) and the
// constants FR and SG, and runs this only on adapters that list that
// configuration at that subgroup size (see coop.wgsl for the rest).

alias half = f16;

fn coop_lane(lid: u32) {}

fn c_zero() -> CoopC {
    return CoopC();
}

// Rows of `sa` (row-major, stride KC) from element `off`.
fn load_a(off: u32) -> CoopA {
    return coopLoadT<CoopA>(&sa[off], KC);
}

// Rows of `sb` (row-major, stride TC) from element `off`.
fn load_b(off: u32) -> CoopB {
    return coopLoadT<CoopB>(&sb[off], TC);
}

fn mma(a: CoopA, b: CoopB, c: CoopC) -> CoopC {
    return coopMultiplyAdd(a, b, c);
}

// Rows of `sc` (row-major, stride TC) from element `off`.
fn c_store(c: CoopC, off: u32) {
    coopStoreT(c, &sc[off], TC);
}
