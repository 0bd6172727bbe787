// PyTorch's quantized softmax (src/ops/qsoftmax/mod.rs runs the same
// uniforms and table on the CPU; rules in tests/data/ops/README.md). MODE:
// 0 QNNPACK's integer softargmax (tab: 256 u32, u32 arithmetic wraps as in C);
// 1 ATen's float path over the last dim (tab: 65,536 f32 bit patterns,
//   tab[m * 256 + b] = sleef_expf(D(b) - D(m)), computed on the host);
// 2 ATen's float path over another dim (_vec_softmax; tab: the Sleef table
//   of mode 1, then 65,536 entries of glibc's expf at the same arguments;
//   aten_tail picks which one a position reads, by ATen's thread split).
// One invocation per packed NHWC4 output word; each of its bytes recomputes
// its row's max and sum (the same values for every element of a row).
//
// f32 arithmetic here: additions of table values (the 16-lane sums), one
// division (fdiv of the float prelude: correctly rounded in integer code), two products
// (e * r, then * (1 / s_out)) and round(). WGSL defines +, * and round() on
// f32 as correctly rounded; no product feeds an addition, so no FMA
// contraction is possible. A subnormal e (an exp argument below about -87)
// may be flushed by a GPU; e * r * (1 / s_out) is then far below 0.5 unless
// s_out < 2^-100, which the quantized output never has in practice.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    total: u32, dim: u32, zp_out: i32, inv_bits: u32,
    threads: u32, pad0: u32, pad1: u32, pad2: u32,
}

override WG: u32 = 64u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> tab: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// fdiv (an exact f32 division in integer code) comes from the float prelude
// (shaders/float.wgsl), compiled in front of this file.

fn byte_at(b: u32, iy: u32, ix: u32, c: u32) -> u32 {
    return (x[((b * p.h + iy) * p.w + ix) * p.c4 + c / 4u] >> (8u * (c % 4u))) & 0xffu;
}

// Byte k of the row through (b, oy, ox, c) along p.dim.
fn row_at(b: u32, oy: u32, ox: u32, c: u32, k: u32) -> u32 {
    switch p.dim {
        case 0u: { return byte_at(b, oy, ox, k); }
        case 1u: { return byte_at(b, k, ox, c); }
        default: { return byte_at(b, oy, k, c); }
    }
}

fn row_len() -> u32 {
    switch p.dim {
        case 0u: { return p.c; }
        case 1u: { return p.h; }
        default: { return p.w; }
    }
}

fn row_max(b: u32, oy: u32, ox: u32, c: u32, n: u32) -> u32 {
    var m = 0u;
    for (var k = 0u; k < n; k++) {
        m = max(m, row_at(b, oy, ox, c, k));
    }
    return m;
}

// QNNPACK: t'[v] = tab[v + 255 - m]; min((t'[x] << 8 + sum >> 1) / sum, 255).
fn qnnpack(b: u32, oy: u32, ox: u32, c: u32) -> u32 {
    let n = row_len();
    let adj = 255u - row_max(b, oy, ox, c, n);
    var sum = 0u;
    for (var k = 0u; k < n; k++) {
        sum = sum + tab[row_at(b, oy, ox, c, k) + adj];
    }
    sum = max(sum, 1u);
    let q = ((tab[byte_at(b, oy, ox, c) + adj] << 8u) + (sum >> 1u)) / sum;
    return min(q, 255u);
}

fn ev(base: u32, v: u32) -> f32 {
    return bitcast<f32>(tab[base + v]);
}

// ATen: vec::reduce_all of + with 16 lanes (left to right below 16), then
// r = 1 / sum, y = rint(e * r * (1 / s_out)) + zp, saturated.
fn aten(b: u32, oy: u32, ox: u32, c: u32) -> u32 {
    let n = row_len();
    let base = row_max(b, oy, ox, c, n) * 256u;
    var sum = 0.0;
    if n < 16u {
        sum = ev(base, row_at(b, oy, ox, c, 0u));
        for (var k = 1u; k < n; k++) {
            sum = sum + ev(base, row_at(b, oy, ox, c, k));
        }
    } else {
        var acc: array<f32, 16>;
        for (var l = 0u; l < 16u; l++) {
            acc[l] = ev(base, row_at(b, oy, ox, c, l));
        }
        for (var k = 16u; k < n; k++) {
            acc[k % 16u] = acc[k % 16u] + ev(base, row_at(b, oy, ox, c, k));
        }
        for (var s = 8u; s >= 1u; s = s / 2u) {
            var prev = acc;
            for (var l = 0u; l < 16u; l++) {
                acc[l] = prev[l] + prev[l ^ s];
            }
        }
        sum = acc[0];
    }
    let r = bitcast<f32>(fdiv(0x3f800000u, bitcast<u32>(sum)));
    let e = ev(base, byte_at(b, oy, ox, c));
    return quantize_out((e * r) * bitcast<f32>(p.inv_bits));
}

// rint(v) + zp, saturated to 0..255 (v = y * (1 / s_out)).
fn quantize_out(v: f32) -> u32 {
    if abs(v) >= 4194304.0 {
        return select(255u, 0u, v < 0.0);
    }
    return u32(clamp(i32(round(v)) + p.zp_out, 0, 255));
}

// Whether ATen's _vec_softmax computes position `pos` (of `total`, rows of
// `inner`) in its scalar tail: its thread split gives each thread a range of
// ceil(total / min(threads, total)) positions, walked 16 at a time while the
// 16 stay inside the row and the range (mod.rs: aten_scalar_position).
fn aten_tail(pos: u32, total: u32, inner: u32, threads: u32) -> bool {
    var b = 0u;
    var e = total;
    if threads > 1u && total > 1u {
        let nt = min(threads, total);
        let chunk = (total + nt - 1u) / nt;
        b = pos / chunk * chunk;
        e = min(total, b + chunk);
    }
    let row = pos / inner;
    var start = 0u;
    if row == b / inner {
        start = b % inner;
    }
    let j = pos % inner;
    let blk = start + (j - start) / 16u * 16u;
    return !(blk + 16u <= inner && row * inner + blk + 16u <= e);
}

// ATen over a dim other than the last (dim 0: C, rows of H*W positions;
// dim 1: H, rows of W): sum = 0 + e_0 + e_1 + ... in order, y = e / sum
// (fdiv), then rint(y * (1 / s_out)) + zp with the product exact in integer
// code (fmul_exact), so a subnormal e is never flushed.
fn aten_dim(b: u32, oy: u32, ox: u32, c: u32) -> u32 {
    let n = row_len();
    let batch = p.total / (p.h * p.w * p.c4);
    var inner = p.w;
    var pos = (b * p.c + c) * p.w + ox;
    if p.dim == 0u {
        inner = p.h * p.w;
        pos = b * inner + oy * p.w + ox;
    }
    let total = batch * (p.c * p.h * p.w / n);
    var base = row_max(b, oy, ox, c, n) * 256u;
    if aten_tail(pos, total, inner, p.threads) {
        base += 65536u;
    }
    var sum = 0.0;
    for (var k = 0u; k < n; k++) {
        sum = sum + ev(base, row_at(b, oy, ox, c, k));
    }
    let e = tab[base + byte_at(b, oy, ox, c)];
    let y = fdiv(e, bitcast<u32>(sum));
    return quantize_out(bitcast<f32>(fmul_exact(y, p.inv_bits)));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let c4 = idx % p.c4;
    let pix = idx / p.c4;
    let ox = pix % p.w;
    let t = pix / p.w;
    let oy = t % p.h;
    let b = t / p.h;
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let c = c4 * 4u + l;
        if c >= p.c {
            break;
        }
        var v: u32;
        if MODE == 0u {
            v = qnnpack(b, oy, ox, c);
        } else if MODE == 1u {
            v = aten(b, oy, ox, c);
        } else {
            v = aten_dim(b, oy, ox, c);
        }
        word |= v << (8u * l);
    }
    y[idx] = word;
}
