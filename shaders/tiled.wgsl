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
// accumulates an RM-pixel x RN-word register block (RM*RN*4 i32 accumulators)
// from them with dot4I8Packed. The epilogue (requant) is fused.
//
// Weights are packed K-major: wt[k * O4 + o4] is the vec4 of weight words
// of the channels 4*o4 .. 4*o4+3 at K word k (zero past O).
//
// Pipeline-overridable constants (checked on the host, see
// conv::TileConfig::check):
//   TM, TN, KT   tile sizes: TM*KT <= XS_MAX, TN*KT <= WS_MAX
//   RM, RN       register block: TM % RM == 0, TN % RN == 0, RM <= 8,
//                RM*RN <= ACC_MAX
//   WG           workgroup size, (TM/RM)*(TN/RN); a multiple of TM, and
//                KT a multiple of WG/TM
// `p.total` is the number of tiles, ceil(M/TM) * ceil(O4/TN).

override WG: u32 = 64u;
override TM: u32 = 64u;
override TN: u32 = 16u;
override KT: u32 = 16u;
override RM: u32 = 4u;
override RN: u32 = 4u;

const XS_MAX: u32 = 2048u;
const WS_MAX: u32 = 512u;
const ACC_MAX: u32 = 16u;

@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;

var<workgroup> xs: array<u32, XS_MAX>;
var<workgroup> ws: array<vec4<u32>, WS_MAX>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tile = wid.x + wid.y * nwg.x;
    if tile >= p.total {
        return;
    }
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

    var acc: array<vec4<i32>, ACC_MAX>;
    for (var k0 = 0u; k0 < p.kq; k0 += KT) {
        for (var e = lid; e < TN * KT; e += WG) {
            let nn = e % TN;
            let kk = e / TN;
            var v = vec4<u32>(0u);
            if k0 + kk < p.kq && n0 + nn < p.o4 {
                v = wt[(k0 + kk) * p.o4 + n0 + nn];
            }
            ws[e] = v;
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
        for (var kk = 0u; kk < KT; kk++) {
            var xv: array<u32, 8>;
            for (var i = 0u; i < RM; i++) {
                xv[i] = xs[kk * TM + px + i * tmr];
            }
            for (var jn = 0u; jn < RN; jn++) {
                let w = ws[kk * TN + nw + jn * tnr];
                for (var i = 0u; i < RM; i++) {
                    let a = xv[i];
                    acc[i * RN + jn] += vec4<i32>(dot4I8Packed(a, w.x), dot4I8Packed(a, w.y), dot4I8Packed(a, w.z), dot4I8Packed(a, w.w));
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let mo = m0 + px + i * tmr;
        if mo >= m_total {
            break;
        }
        for (var jn = 0u; jn < RN; jn++) {
            let n = n0 + nw + jn * tnr;
            if n < p.o4 {
                y[mo * p.o4 + n] = requant_word(n, acc[i * RN + jn]);
            }
        }
    }
}
