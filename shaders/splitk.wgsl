// Split-K pass 2: sums the i32 partial accumulators that tiled.wgsl wrote as
// split-K pass 1 (its SPLITS override > 0) and applies the fused epilogue.
//
// Layout, bindings and the epilogue: see common.wgsl (prepended by the host).
// Binding 1 (`x`) holds the partials, not activations: word
// ((s*M + m)*O4 + o4)*4 + l is split s's accumulator of output channel
// 4*o4 + l at output pixel m, as i32 bits. The weights (binding 2) are not
// used.
//
// One invocation computes one output word (pixel m, output word o4; index
// m*O4 + o4 as in the NHWC4 output): it adds the SPLITS partials in split
// order with i32 (wrapping) additions. Wrapping addition is associative, so
// the sum is the exact integer accumulator of the unsplit reduction, bit for
// bit, and the epilogue (requant_word) sees the same input as the one-pass
// kernels'.
//
// Pipeline-overridable constants:
//   WG      workgroup size
//   SPLITS  number of splits pass 1 wrote (>= 1)
// `p.total` is the number of output words, M * O4.

override WG: u32 = 64u;
override SPLITS: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let o4 = idx % p.o4;
    // Words per split: M * O4 * 4.
    let stride = p.total * 4u;
    var acc = vec4<i32>(0);
    for (var s = 0u; s < SPLITS; s++) {
        let b = s * stride + idx * 4u;
        acc += bitcast<vec4<i32>>(vec4<u32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]));
    }
    y[idx] = requant_at(idx, o4, acc);
}
