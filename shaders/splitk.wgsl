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
// 1: the layer ends in a global average (quant::EpilogueForm::OnednnSumPool,
// form 4, or OnednnPool, form 5): `p.total` is N * O4, one invocation per
// output word of a sample; under form 4 binding 2 holds the sum addend (NHWC4
// words of the conv's output shape), under form 5 it is not read.
// 2: oneDNN's sum with an f32 output (quant::EpilogueForm::OnednnSumFloat,
// form 9): one invocation per output word (`p.total` = M * O4) reads the
// addend word at binding 2 and writes the 4 channels' f32 values (NHWC4F,
// word 4 * idx + l; 0 past `p.o`).
override POOL: u32 = 0u;

// Output word w's accumulators: the SPLITS partials (split sp at word
// sp * stride + w * 4) added in split order.
fn split_acc(w: u32, stride: u32) -> vec4<i32> {
    var acc = vec4<i32>(0);
    for (var sp = 0u; sp < SPLITS; sp++) {
        let b = sp * stride + w * 4u;
        acc += bitcast<vec4<i32>>(vec4<u32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]));
    }
    return acc;
}

// The weights' binding of the other kernels; unused here except by POOL.
@group(0) @binding(2) var<storage, read> addend: array<u32>;

// One pixel's f32 value under form 4 (and 9): v as under form 1, plus
// d = f32(f32(a - za) * sa) (p.pad0: sa as f32 bits, p.pad1: za's stored
// byte), t = f32(v + d), then oneDNN's relu post-op when p.pad2 is 1. Form 5 (quant::EpilogueForm::OnednnPool,
// no addend): v itself, then the relu.
fn pool_value(oc: u32, acc: i32, a: u32) -> f32 {
    let c = chans[oc];
    let x = exact_f32(acc + c.bias_i32);
    let v = opaque(opaque(x * p.in_scale) * c.mult) + c.bias_f32;
    var t = v;
    if p.form == 4u || p.form == 9u {
        let d = opaque(f32(i32(a) - i32(p.pad1)) * bitcast<f32>(p.pad0));
        t = v + d;
    }
    if p.pad2 == 1u {
        return max(t, 0.0);
    }
    return t;
}

// Output word o4 of sample n: per channel, the pixels' values summed in f32
// in row-major order from 0, divided by f32(H*W), then
// clamp(rint(f32(m * inv_out)) + zp, lo, hi) (Inductor's quantize).
fn pool_word(idx: u32) -> u32 {
    let o4 = idx % p.o4;
    let n = idx / p.o4;
    let hw = p.oh * p.ow;
    let stride = p.n * hw * p.o4 * 4u;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < hw; i++) {
        let w = (n * hw + i) * p.o4 + o4;
        let acc = split_acc(w, stride);
        var a = 0u;
        if p.form == 4u {
            a = addend[w];
        }
        for (var l = 0u; l < 4u; l++) {
            if o4 * 4u + l < p.o {
                s[l] = s[l] + pool_value(o4 * 4u + l, acc[l], (a >> (8u * l)) & 0xffu);
            }
        }
    }
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        if o4 * 4u + l >= p.o {
            break;
        }
        let m = s[l] / f32(hw);
        let r = clamp(round(m * p.inv_out), f32(p.lo - p.zp_out), f32(p.hi - p.zp_out));
        word |= u32(i32(r) + p.zp_out) << (8u * l);
    }
    return word;
}

// Output word idx (pixel m, word o4) under form 9: its partial accumulators
// summed, the addend's word, and 4 f32 words out.
fn sum_float_word(idx: u32) {
    let o4 = idx % p.o4;
    let acc = split_acc(idx, p.total * 4u);
    let a = addend[idx];
    for (var l = 0u; l < 4u; l++) {
        let oc = o4 * 4u + l;
        var v = 0.0;
        if oc < p.o {
            v = pool_value(oc, acc[l], (a >> (8u * l)) & 0xffu);
        }
        y[4u * idx + l] = bitcast<u32>(v);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    if POOL == 1u {
        y[idx] = pool_word(idx);
        return;
    }
    if POOL == 2u {
        sum_float_word(idx);
        return;
    }
    let o4 = idx % p.o4;
    // Words per split: M * O4 * 4.
    let acc = split_acc(idx, p.total * 4u);
    store_out(idx, o4, acc);
}
