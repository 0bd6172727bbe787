// Tiled implicit-GEMM int8 conv2d / linear for one group (groups == 1):
// M = N*OH*OW output pixels, N = O output channels (O4 = ceil(O/4) output
// words), K = kh*kw*ceil(C/4) input words (`p.kq`), in the order (ky, kx, j).
//
// Layout, bindings and the epilogue: see common.wgsl (prepended by the host).
//
// A workgroup computes a TM-pixel x TN-output-word tile (TN*4 channels). It
// walks K in slices of KT words; per slice it stages the TM x KT activation
// words (already shifted to signed, padded positions as `pad_word`) and the
// KT x TN weight vectors in workgroup memory, then every invocation
// accumulates an RM-pixel x 4-word register block (64 or 128 i32
// accumulators in 16 or 32 named vec4s: written out by hand because
// lavapipe's compiler keeps a dynamically indexed private array in memory)
// from them with dot4I8Packed.
// The epilogue (requant) is fused, unless the kernel runs as split-K pass 1
// (SPLITS > 0, below).
//
// Weights are packed K-major: wt[k * O4 + o4] is the vec4 of weight words
// of the channels 4*o4 .. 4*o4+3 at K word k (zero past O).
//
// Pipeline-overridable constants (checked on the host, see
// conv::TileConfig::check):
//   TM, TN, KT   tile sizes: multiples of RM (TM) and 4 (TN), TM*KT <= XS_MAX,
//                TN*KT <= WS_MAX
//   RM           register block rows: 4 or 8 pixels per invocation (x 4
//                output words; 8: 128 accumulators, 24 workgroup-memory
//                words read per 128 packed dot products instead of 20 per 64)
//   PF           prefetch ("double-buffered staging" through registers):
//                each invocation reads the next slice's words from global
//                memory into registers before it computes the current
//                slice, and stores them to workgroup memory after; needs
//                TN*KT a multiple of WG with TN*KT/WG <= 32, and
//                KT/(WG/TM) <= 16
//   WG           workgroup size, (TM/RM)*(TN/4); a multiple of TM, and
//                KT a multiple of WG/TM
//   SPLITS       0: one pass, the whole reduction per tile, fused epilogue.
//                S >= 1: split-K pass 1. K is cut into S splits of `chunk`
//                words (ceil(ceil(K/KT)/S) slices of KT, so a split never
//                straddles a slice; trailing splits may be empty). Workgroup
//                i computes tile i % tiles over split s = i / tiles and
//                writes its raw i32 accumulators (bit patterns, no epilogue)
//                to y as y[((s*M + m)*O4 + o4)*4 + l], every (s, m, o4 < O4,
//                l) written (0 for an empty split). splitk.wgsl sums them.
// `p.total` is the number of workgroups, ceil(M/TM) * ceil(O4/TN) * max(SPLITS, 1).

override WG: u32 = 64u;
override TM: u32 = 64u;
override TN: u32 = 16u;
override KT: u32 = 16u;
override SPLITS: u32 = 0u;
override RM: u32 = 4u;
override PF: bool = false;

const XS_MAX: u32 = 2048u;
const WS_MAX: u32 = 512u;
// The register block: RM pixels x RN output words per invocation.
const RN: u32 = 4u;
// Prefetch registers: weight vectors and activation words per invocation.
const PF_W: u32 = 32u;
const PF_X: u32 = 16u;

@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;

var<workgroup> xs: array<u32, XS_MAX>;
var<workgroup> ws: array<vec4<u32>, WS_MAX>;

// Requantizes and stores one pixel's row of the register block: output
// words n, n + step, n + 2*step, n + 3*step of pixel m (when inside). As
// split-K pass 1, stores the raw accumulators of split `split` instead.
fn store(split: u32, m: u32, n: u32, step: u32, c0: vec4<i32>, c1: vec4<i32>, c2: vec4<i32>, c3: vec4<i32>) {
    let m_total = p.n * p.oh * p.ow;
    if m >= m_total {
        return;
    }
    let acc = array<vec4<i32>, 4>(c0, c1, c2, c3);
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j * step;
        if nj < p.o4 {
            if SPLITS > 0u {
                store_partial(split, m, nj, acc[j]);
            } else {
                store_out(m * p.o4 + nj, nj, acc[j]);
            }
        }
    }
}

// The register block's accumulators: rows 0-3 (a) and, when RM = 8,
// rows 4-7 (b) of pixels px + i*(TM/RM), output words nw + j*(TN/RN).
var<private> a00: vec4<i32>; var<private> a01: vec4<i32>; var<private> a02: vec4<i32>; var<private> a03: vec4<i32>;
var<private> a10: vec4<i32>; var<private> a11: vec4<i32>; var<private> a12: vec4<i32>; var<private> a13: vec4<i32>;
var<private> a20: vec4<i32>; var<private> a21: vec4<i32>; var<private> a22: vec4<i32>; var<private> a23: vec4<i32>;
var<private> a30: vec4<i32>; var<private> a31: vec4<i32>; var<private> a32: vec4<i32>; var<private> a33: vec4<i32>;
var<private> b00: vec4<i32>; var<private> b01: vec4<i32>; var<private> b02: vec4<i32>; var<private> b03: vec4<i32>;
var<private> b10: vec4<i32>; var<private> b11: vec4<i32>; var<private> b12: vec4<i32>; var<private> b13: vec4<i32>;
var<private> b20: vec4<i32>; var<private> b21: vec4<i32>; var<private> b22: vec4<i32>; var<private> b23: vec4<i32>;
var<private> b30: vec4<i32>; var<private> b31: vec4<i32>; var<private> b32: vec4<i32>; var<private> b33: vec4<i32>;

// Accumulates the staged slice (xs, ws) into the register block.
fn mac_slice(px: u32, nw: u32) {
    let tmr = TM / RM;
    let tnr = TN / RN;
    for (var kk = 0u; kk < KT; kk++) {
        let xb = kk * TM + px;
        let x0 = xs[xb];
        let x1 = xs[xb + tmr];
        let x2 = xs[xb + 2u * tmr];
        let x3 = xs[xb + 3u * tmr];
        let wb = kk * TN + nw;
        let w0 = ws[wb];
        let w1 = ws[wb + tnr];
        let w2 = ws[wb + 2u * tnr];
        let w3 = ws[wb + 3u * tnr];
        a00 += dot4(x0, w0); a01 += dot4(x0, w1); a02 += dot4(x0, w2); a03 += dot4(x0, w3);
        a10 += dot4(x1, w0); a11 += dot4(x1, w1); a12 += dot4(x1, w2); a13 += dot4(x1, w3);
        a20 += dot4(x2, w0); a21 += dot4(x2, w1); a22 += dot4(x2, w2); a23 += dot4(x2, w3);
        a30 += dot4(x3, w0); a31 += dot4(x3, w1); a32 += dot4(x3, w2); a33 += dot4(x3, w3);
        if RM == 8u {
            let x4 = xs[xb + 4u * tmr];
            let x5 = xs[xb + 5u * tmr];
            let x6 = xs[xb + 6u * tmr];
            let x7 = xs[xb + 7u * tmr];
            b00 += dot4(x4, w0); b01 += dot4(x4, w1); b02 += dot4(x4, w2); b03 += dot4(x4, w3);
            b10 += dot4(x5, w0); b11 += dot4(x5, w1); b12 += dot4(x5, w2); b13 += dot4(x5, w3);
            b20 += dot4(x6, w0); b21 += dot4(x6, w1); b22 += dot4(x6, w2); b23 += dot4(x6, w3);
            b30 += dot4(x7, w0); b31 += dot4(x7, w1); b32 += dot4(x7, w2); b33 += dot4(x7, w3);
        }
    }
}

// The weight vector of element e (output word e % TN, K word e / TN) of
// the slice at K word k0; 0 past K and past O4.
fn weight_at(k0: u32, n0: u32, e: u32) -> vec4<u32> {
    let nn = e % TN;
    let kk = e / TN;
    if k0 + kk < p.kq && n0 + nn < p.o4 {
        return wt[(k0 + kk) * p.o4 + n0 + nn];
    }
    return vec4<u32>(0u);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = wid.x + wid.y * nwg.x;
    if idx >= p.total {
        return;
    }
    // The tile and the K range [k_begin, k_end) of this workgroup.
    let splits = max(SPLITS, 1u);
    let tiles = p.total / splits;
    let tile = idx % tiles;
    let split = idx / tiles;
    let chunk = ((p.kq + KT - 1u) / KT + splits - 1u) / splits * KT;
    let k_begin = split * chunk;
    let k_end = min(k_begin + chunk, p.kq);
    let m_total = p.n * p.oh * p.ow;
    let n_tiles = (p.o4 + TN - 1u) / TN;
    let m0 = (tile / n_tiles) * TM;
    let n0 = (tile % n_tiles) * TN;
    let cg4 = p.c4;

    // Staging role: pixel `lm` of the tile, K words kk0 .. kk0+kper of each slice.
    let lm = lid % TM;
    let kper = KT / (WG / TM);
    let kk0 = (lid / TM) * kper;
    let m = m0 + lm;
    let m_ok = m < m_total;
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_w);

    // Compute role: pixels px + i*(TM/RM), output words nw + j*(TN/RN).
    let tmr = TM / RM;
    let tnr = TN / RN;
    let px = lid % tmr;
    let nw = lid / tmr;

    // Activation word s of this invocation's slice part at K word k
    // (positions (ky, kx, j) of pixel m), as the kernel stages it: signed,
    // padded positions as `pad_word`, past K anything (the weights are 0).
    var pf_w: array<vec4<u32>, PF_W>;
    var pf_x: array<u32, PF_X>;
    if PF {
        // Prefetch pipeline: slice k_begin into registers, then per slice:
        // registers to workgroup memory, the next slice into registers,
        // the products.
        let nwv = TN * KT / WG;
        var kn = k_begin;
        if kn < k_end {
            for (var i = 0u; i < nwv; i++) {
                pf_w[i] = weight_at(kn, n0, lid + i * WG);
            }
            for (var s = 0u; s < kper; s++) {
                pf_x[s] = act_word(kn + kk0 + s, m_ok, b, iy0, ix0, cg4);
            }
        }
        for (var k0 = k_begin; k0 < k_end; k0 += KT) {
            for (var i = 0u; i < nwv; i++) {
                ws[lid + i * WG] = pf_w[i];
            }
            for (var s = 0u; s < kper; s++) {
                xs[(kk0 + s) * TM + lm] = pf_x[s] ^ SIGN;
            }
            workgroupBarrier();
            kn = k0 + KT;
            if kn < k_end {
                for (var i = 0u; i < nwv; i++) {
                    pf_w[i] = weight_at(kn, n0, lid + i * WG);
                }
                for (var s = 0u; s < kper; s++) {
                    pf_x[s] = act_word(kn + kk0 + s, m_ok, b, iy0, ix0, cg4);
                }
            }
            mac_slice(px, nw);
            workgroupBarrier();
        }
    } else {
        for (var k0 = k_begin; k0 < k_end; k0 += KT) {
            for (var e = lid; e < TN * KT; e += WG) {
                ws[e] = weight_at(k0, n0, e);
            }
            var k = k0 + kk0;
            var j = k % cg4;
            let tap = k / cg4;
            var kx = tap % p.kw;
            var ky = tap / p.kw;
            for (var s = 0u; s < kper; s++) {
                var v = 0u; // past K the weights are 0
                if k < p.kq && m_ok {
                    let iy = iy0 + i32(ky * p.dil_h);
                    let ix = ix0 + i32(kx * p.dil_w);
                    v = p.pad_word;
                    if in_bounds(iy, ix) {
                        v = x[((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c4 + j];
                    }
                }
                xs[(kk0 + s) * TM + lm] = v ^ SIGN;
                k++;
                j++;
                if j == cg4 {
                    j = 0u;
                    kx++;
                    if kx == p.kw {
                        kx = 0u;
                        ky++;
                    }
                }
            }
            workgroupBarrier();
            mac_slice(px, nw);
            workgroupBarrier();
        }
    }

    let n = n0 + nw;
    let m1 = m0 + px;
    store(split, m1, n, tnr, a00, a01, a02, a03);
    store(split, m1 + tmr, n, tnr, a10, a11, a12, a13);
    store(split, m1 + 2u * tmr, n, tnr, a20, a21, a22, a23);
    store(split, m1 + 3u * tmr, n, tnr, a30, a31, a32, a33);
    if RM == 8u {
        store(split, m1 + 4u * tmr, n, tnr, b00, b01, b02, b03);
        store(split, m1 + 5u * tmr, n, tnr, b10, b11, b12, b13);
        store(split, m1 + 6u * tmr, n, tnr, b20, b21, b22, b23);
        store(split, m1 + 7u * tmr, n, tnr, b30, b31, b32, b33);
    }
}
