// Benchmark only: the tiled f32 baseline, the same effort as qfuse's tiled
// int8 kernel (`shaders/tiled.wgsl` of the library), so that "int8 vs f32"
// compares like with like. groups == 1 only (depthwise layers keep the
// simple kernel `conv2d_f32.wgsl`, as the int8 side keeps its one-word-per-
// invocation `depthwise.wgsl`).
//
// Implicit GEMM over f32 NHWC activations (channels innermost, not padded):
// M = N*OH*OW output pixels, N = O output channels (O4 = O/4 output vec4s,
// O a multiple of 4), K = kh*kw*C input values in the order (ky, kx, c).
//
// A workgroup computes a TM-pixel x TN-output-vec4 tile (TN*4 channels). It
// walks K in slices of KT values; per slice it stages the TM x KT activation
// values (0 at padded positions and past K) and the KT x TN weight vec4s in
// workgroup memory, then every invocation accumulates a 4-pixel x 4-vec4
// register block (64 f32 accumulators in 16 named vec4s, as tiled.wgsl
// does) with FMAs. The epilogue is fused: + bias (the BatchNorm folded into
// weights and bias by the host, or the raw bias for the unfused baseline),
// then ReLU if RELU.
//
// Weights are laid out [kh][kw][C][O] (K-major, the layout of
// conv2d_f32.wgsl), so wt[k * O4 + o4] is the vec4 of the channels
// 4*o4 .. 4*o4+3 at K index k.
//
// Pipeline-overridable constants (checked on the host, layers.rs):
//   TM, TN, KT   tile sizes: multiples of 4 (TM, TN), TM*KT <= XS_MAX,
//                TN*KT <= WS_MAX
//   WG           workgroup size, (TM/4)*(TN/4); a multiple of TM, and KT a
//                multiple of WG/TM
//   RELU         ReLU after the bias
// `p.total` is the number of workgroups, ceil(M/TM) * ceil(O4/TN).

struct F32Params {
    n: u32, c: u32, h: u32, w: u32,
    o: u32, o4: u32, oh: u32, ow: u32,
    kh: u32, kw: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, cg: u32, og: u32,
    total: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

override WG: u32 = 64u;
override TM: u32 = 64u;
override TN: u32 = 16u;
override KT: u32 = 16u;
override RELU: bool = false;

const XS_MAX: u32 = 2048u;
const WS_MAX: u32 = 512u;
// The register block: RM pixels x RN output vec4s per invocation.
const RM: u32 = 4u;
const RN: u32 = 4u;

@group(0) @binding(0) var<uniform> p: F32Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ch: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

var<workgroup> xs: array<f32, XS_MAX>;
var<workgroup> ws: array<vec4<f32>, WS_MAX>;

fn in_bounds(iy: i32, ix: i32) -> bool {
    return iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
}

// Bias, ReLU and the store of one pixel's row of the register block: output
// vec4s n, n + step, n + 2*step, n + 3*step of pixel m (when inside).
fn store(m: u32, n: u32, step: u32, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) {
    if m >= p.n * p.oh * p.ow {
        return;
    }
    let acc = array<vec4<f32>, 4>(c0, c1, c2, c3);
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j * step;
        if nj < p.o4 {
            var v = acc[j] + ch[nj];
            if RELU {
                v = max(v, vec4<f32>(0.0));
            }
            y[m * p.o4 + nj] = v;
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = wid.x + wid.y * nwg.x;
    if idx >= p.total {
        return;
    }
    let kq = p.kh * p.kw * p.c;
    let m_total = p.n * p.oh * p.ow;
    let n_tiles = (p.o4 + TN - 1u) / TN;
    let m0 = (idx / n_tiles) * TM;
    let n0 = (idx % n_tiles) * TN;

    // Staging role: pixel `lm` of the tile, K values kk0 .. kk0+kper of each slice.
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

    // Compute role: pixels px + i*(TM/RM), output vec4s nw + j*(TN/RN).
    let tmr = TM / RM;
    let tnr = TN / RN;
    let px = lid % tmr;
    let nw = lid / tmr;

    let z = vec4<f32>(0.0);
    var a00 = z; var a01 = z; var a02 = z; var a03 = z;
    var a10 = z; var a11 = z; var a12 = z; var a13 = z;
    var a20 = z; var a21 = z; var a22 = z; var a23 = z;
    var a30 = z; var a31 = z; var a32 = z; var a33 = z;
    for (var k0 = 0u; k0 < kq; k0 += KT) {
        for (var e = lid; e < TN * KT; e += WG) {
            let nn = e % TN;
            let kk = e / TN;
            var v = z;
            if k0 + kk < kq && n0 + nn < p.o4 {
                v = wt[(k0 + kk) * p.o4 + n0 + nn];
            }
            ws[e] = v;
        }
        var k = k0 + kk0;
        var ci = k % p.c;
        let tap = k / p.c;
        var kx = tap % p.kw;
        var ky = tap / p.kw;
        for (var s = 0u; s < kper; s++) {
            var v = 0.0; // padding, and past K (where the weights are 0 too)
            if k < kq && m_ok {
                let iy = iy0 + i32(ky);
                let ix = ix0 + i32(kx);
                if in_bounds(iy, ix) {
                    v = x[((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c + ci];
                }
            }
            xs[(kk0 + s) * TM + lm] = v;
            k++;
            ci++;
            if ci == p.c {
                ci = 0u;
                kx++;
                if kx == p.kw {
                    kx = 0u;
                    ky++;
                }
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let xb = kk * TM + px;
            let x0 = vec4<f32>(xs[xb]);
            let x1 = vec4<f32>(xs[xb + tmr]);
            let x2 = vec4<f32>(xs[xb + 2u * tmr]);
            let x3 = vec4<f32>(xs[xb + 3u * tmr]);
            let wb = kk * TN + nw;
            let w0 = ws[wb];
            let w1 = ws[wb + tnr];
            let w2 = ws[wb + 2u * tnr];
            let w3 = ws[wb + 3u * tnr];
            a00 = fma(x0, w0, a00); a01 = fma(x0, w1, a01); a02 = fma(x0, w2, a02); a03 = fma(x0, w3, a03);
            a10 = fma(x1, w0, a10); a11 = fma(x1, w1, a11); a12 = fma(x1, w2, a12); a13 = fma(x1, w3, a13);
            a20 = fma(x2, w0, a20); a21 = fma(x2, w1, a21); a22 = fma(x2, w2, a22); a23 = fma(x2, w3, a23);
            a30 = fma(x3, w0, a30); a31 = fma(x3, w1, a31); a32 = fma(x3, w2, a32); a33 = fma(x3, w3, a33);
        }
        workgroupBarrier();
    }

    let n = n0 + nw;
    let m1 = m0 + px;
    store(m1, n, tnr, a00, a01, a02, a03);
    store(m1 + tmr, n, tnr, a10, a11, a12, a13);
    store(m1 + 2u * tmr, n, tnr, a20, a21, a22, a23);
    store(m1 + 3u * tmr, n, tnr, a30, a31, a32, a33);
}
