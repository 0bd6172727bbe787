// Tiled implicit-GEMM int8 conv2d / linear for one group (groups == 1) on
// cooperative matrices (tensor cores): the products of int8 values are
// computed as f16 x f16 -> f32 matrix multiply-adds, exactly.
//
// This file is the kernel's body. The host compiles it after the float and
// conv preludes (common.wgsl: layout, bindings, epilogue) and one of two
// files of matrix primitives (see Kernel::source() in src/gpu/context.rs):
//   coop_hw.wgsl   the tensor cores (`coop_mat16x16`, `coopLoadT`,
//                  `coopMultiplyAdd`, `coopStoreT`; `enable f16;` and
//                  `enable wgpu_cooperative_matrix;` at the module's top);
//   coop_emu.wgsl  the same primitives in plain WGSL on workgroup memory
//                  (any adapter; tests run the kernel's indexing, staging,
//                  chunking and epilogue with it where no tensor cores are).
// The primitives: `half` (f16, or f32 when emulated), `CoopA`/`CoopB`/`CoopC`
// (FR x FR fragments), `coop_lane(lid)`, `c_zero()`, `load_a(off)` (rows of
// `sa` from element `off`, row stride KC), `load_b(off)` (rows of `sb`, row
// stride TC), `mma(a, b, c)` (c + a*b), `c_store(c, off)` (rows of `sc`,
// row stride TC).
//
// Exactness. A and B hold int8 values (activations shifted to signed,
// x ^ 0x80 = x - 128, and weights), exact in f16; every product is an
// integer of magnitude <= 128 * 128 = 2^14, exact in f32. A fragment's f32
// accumulator is converted to i32 and cleared every CHUNK K values (512):
// its partial sums are integers of magnitude <= 512 * 2^14 = 2^23, so every
// one is exact in f32 even where the tensor cores align the terms of an
// addition to the largest and truncate (a margin of one bit below 2^24).
// The i32 sum of the chunks is the integer accumulator of the reduction, bit
// for bit, and the epilogue (common.wgsl's store_out) sees what the other
// kernels give it.
//
// Work split. M = N*OH*OW output pixels, N = O output channels, K = the
// reduction in bytes, (ky, kx, c) with c padded to whole words (`p.kq` words;
// padding bytes have weight 0). A workgroup computes a TM x TC tile (64
// pixels x 64 channels) with WG = 128 invocations, WG / SG subgroups (SG is
// the adapter's fixed subgroup size; the host checks it and sets SG and the
// fragment edge FR with the fragment types: FR = 16 on SG = 32, 4
// subgroups; FR = 8 on SG = 8, 16 subgroups), each subgroup a 2FR x 2FR
// block of 2 x 2 fragments. It walks K in stages of KC = 32 values: stages
// the TM x KC activations (`sa`, f16) and KC x TC weights (`sb`, f16) in
// workgroup memory, then each subgroup runs KC / FR k-steps of 4 mma. After
// every CHUNK values (and at the end) the subgroups store their fragments
// to `sc` (f32) and every invocation adds the values of its 8 output words
// to 8 i32 vec4s (word e = lid + j*WG of the tile: pixel e / TW, word e % TW).
//
// Weights: the tiled kernel's packing (tiled.wgsl: wt[k * O4 + o4] holds
// the 4 channels' words at K word k), read through binding 2.
//
// Pipeline-overridable constant:
//   SPLIT   false: one pass, fused epilogue. true: split-K pass 1 as in
//           tiled.wgsl (K cut into S ranges of whole stages, raw i32
//           accumulators to y[((s*M + m)*O4 + o4)*4 + l], every word
//           written); splitk.wgsl sums them.
// `p.total` is the number of workgroups, ceil(M/TM) * ceil(O4/TW) * S (S = 1
// for one pass): the kernel derives S from it, so one pipeline serves every
// split count.

override SPLIT: bool = false;

const WG: u32 = 128u;
const TM: u32 = 64u;
const TC: u32 = 64u;
const TW: u32 = 16u;
const KC: u32 = 32u;
const KCW: u32 = 8u;
// Stages per exact chunk: CHUNK_STAGES * KC = 512 values.
const CHUNK_STAGES: u32 = 16u;
// Subgroup blocks per tile edge: the subgroups cover the tile.
const BLOCKS: u32 = TM / (2u * FR);
const_assert BLOCKS * BLOCKS * SG == WG;

@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;

var<workgroup> sa: array<half, 2048>; // TM x KC, row-major [m][k]
var<workgroup> sb: array<half, 2048>; // KC x TC, row-major [k][n]
var<workgroup> sc: array<f32, 4096>;  // TM x TC, row-major [m][n]

// The f32 values of output word `w` of the tile (its 4 channels), as i32.
fn chunk_word(w: u32) -> vec4<i32> {
    let o = (w / TW) * TC + (w % TW) * 4u;
    return vec4<i32>(i32(sc[o]), i32(sc[o + 1u]), i32(sc[o + 2u]), i32(sc[o + 3u]));
}

// Stores output word `w` of the tile (pixel m0 + w / TW, output word
// n0 + w % TW) when inside: the epilogue, or as split-K pass 1 the raw
// accumulators of split `split`.
fn store_word(split: u32, m0: u32, n0: u32, w: u32, acc: vec4<i32>) {
    let m = m0 + w / TW;
    let nw = n0 + w % TW;
    let m_total = p.n * p.oh * p.ow;
    if m >= m_total || nw >= p.o4 {
        return;
    }
    if SPLIT {
        store_partial(split, m, nw, acc);
    } else {
        store_out(m * p.o4 + nw, nw, acc);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    coop_lane(lid);
    let idx = wid.x + wid.y * nwg.x;
    // Uniform per workgroup: the matrix operations below run in uniform
    // control flow (every loop bound depends on the workgroup only).
    if idx >= p.total {
        return;
    }
    let m_total = p.n * p.oh * p.ow;
    let n_tiles = (p.o4 + TW - 1u) / TW;
    let tiles = (m_total + TM - 1u) / TM * n_tiles;
    let splits = p.total / tiles;
    let tile = idx % tiles;
    let split = idx / tiles;
    let stages = (p.kq + KCW - 1u) / KCW;
    let per = (stages + splits - 1u) / splits;
    let s_begin = min(split * per, stages);
    let s_end = min(s_begin + per, stages);
    let m0 = (tile / n_tiles) * TM;
    let n0 = (tile % n_tiles) * TW;
    let cg4 = p.c4;

    // Staging of A: this invocation's pixel (the same every stage) and K
    // words kw0, kw0 + 2, kw0 + 4, kw0 + 6 of each stage.
    let lm = lid % TM;
    let kw0 = lid / TM;
    let m = m0 + lm;
    let m_ok = m < m_total;
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_w);
    // Staging of B: K word kb of the stage, output word nb of the tile.
    let kb = lid / TW;
    let nb = lid % TW;
    // This subgroup's 2FR x 2FR block of the tile.
    let sg = lid / SG;
    let bm = (sg % BLOCKS) * 2u * FR;
    let bn = (sg / BLOCKS) * 2u * FR;

    var acc0 = vec4<i32>(0); var acc1 = vec4<i32>(0); var acc2 = vec4<i32>(0); var acc3 = vec4<i32>(0);
    var acc4 = vec4<i32>(0); var acc5 = vec4<i32>(0); var acc6 = vec4<i32>(0); var acc7 = vec4<i32>(0);
    var c00 = c_zero(); var c01 = c_zero(); var c10 = c_zero(); var c11 = c_zero();
    var s = s_begin;
    while s < s_end {
        let chunk_end = min(s + CHUNK_STAGES, s_end);
        for (; s < chunk_end; s++) {
            let k0 = s * KCW;
            for (var i = 0u; i < 4u; i++) {
                let kw = kw0 + 2u * i;
                let v = act_word(k0 + kw, m_ok, b, iy0, ix0, cg4);
                let q = unpack4xI8(v ^ SIGN);
                let o = lm * KC + kw * 4u;
                sa[o] = half(q.x);
                sa[o + 1u] = half(q.y);
                sa[o + 2u] = half(q.z);
                sa[o + 3u] = half(q.w);
            }
            {
                var wv = vec4<u32>(0u);
                if k0 + kb < p.kq && n0 + nb < p.o4 {
                    wv = wt[(k0 + kb) * p.o4 + n0 + nb];
                }
                // Channel 4*nb + l's word holds K values 4*kb .. 4*kb+3.
                for (var l = 0u; l < 4u; l++) {
                    let q = unpack4xI8(wv[l]);
                    let o = (kb * 4u) * TC + nb * 4u + l;
                    sb[o] = half(q.x);
                    sb[o + TC] = half(q.y);
                    sb[o + 2u * TC] = half(q.z);
                    sb[o + 3u * TC] = half(q.w);
                }
            }
            workgroupBarrier();
            for (var ks = 0u; ks < KC; ks += FR) {
                let a0 = load_a(bm * KC + ks);
                let a1 = load_a((bm + FR) * KC + ks);
                let b0 = load_b(ks * TC + bn);
                let b1 = load_b(ks * TC + bn + FR);
                c00 = mma(a0, b0, c00);
                c01 = mma(a0, b1, c01);
                c10 = mma(a1, b0, c10);
                c11 = mma(a1, b1, c11);
            }
            workgroupBarrier();
        }
        // End of a chunk: its exact f32 sums into the i32 accumulators.
        c_store(c00, bm * TC + bn);
        c_store(c01, bm * TC + bn + FR);
        c_store(c10, (bm + FR) * TC + bn);
        c_store(c11, (bm + FR) * TC + bn + FR);
        workgroupBarrier();
        acc0 += chunk_word(lid);
        acc1 += chunk_word(lid + WG);
        acc2 += chunk_word(lid + 2u * WG);
        acc3 += chunk_word(lid + 3u * WG);
        acc4 += chunk_word(lid + 4u * WG);
        acc5 += chunk_word(lid + 5u * WG);
        acc6 += chunk_word(lid + 6u * WG);
        acc7 += chunk_word(lid + 7u * WG);
        workgroupBarrier();
        c00 = c_zero();
        c01 = c_zero();
        c10 = c_zero();
        c11 = c_zero();
    }

    store_word(split, m0, n0, lid, acc0);
    store_word(split, m0, n0, lid + WG, acc1);
    store_word(split, m0, n0, lid + 2u * WG, acc2);
    store_word(split, m0, n0, lid + 3u * WG, acc3);
    store_word(split, m0, n0, lid + 4u * WG, acc4);
    store_word(split, m0, n0, lid + 5u * WG, acc5);
    store_word(split, m0, n0, lid + 6u * WG, acc6);
    store_word(split, m0, n0, lid + 7u * WG, acc7);
}
