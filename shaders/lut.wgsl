// Table ops with relayout: out[n, c, h, w] = table[in[n, map(c, h, w)]].
// One kernel serves every elementwise op on quint8 whose result depends on the
// byte alone (relu, relu6, hardtanh, hardswish, requantize = dequantize then
// quantize), flatten/reshape (identity table, NCHW order preserved), and each
// input of a channel concatenation (written at a channel offset, the other
// bytes of shared words kept). The tables are computed on the host by the CPU
// reference's own scalar functions, so the GPU result is exact by construction.
//
// Two tables (512 entries): the second applies from a split point on, either a
// flat index (ATen's vector/scalar split: in NCHW order, or in NHWC order when
// `split_nhwc` is set, PyTorch holding the tensor channels-last) or an input
// channel.

struct Params {
    oc: u32, oh: u32, ow: u32, oc4: u32,
    ic: u32, ih: u32, iw: u32, ic4: u32,
    c_off: u32, c_len: u32, split: u32, by_channel: u32,
    total: u32, merge: u32, split_nhwc: u32, pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let oc4 = idx % p.oc4;
    let pix = idx / p.oc4;
    let ox = pix % p.ow;
    let t = pix / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    var word = 0u;
    if p.merge != 0u {
        word = y[idx];
    }
    let isz = p.ic * p.ih * p.iw;
    for (var l = 0u; l < 4u; l++) {
        let c = oc4 * 4u + l;
        if c < p.c_off || c >= p.c_off + p.c_len || c >= p.oc {
            continue;
        }
        // Flat index within the sample, in NCHW order.
        let f = ((c - p.c_off) * p.oh + oy) * p.ow + ox;
        let ic = f / (p.ih * p.iw);
        let r = f % (p.ih * p.iw);
        let iy = r / p.iw;
        let ix = r % p.iw;
        let byte = (x[((b * p.ih + iy) * p.iw + ix) * p.ic4 + ic / 4u] >> (8u * (ic % 4u))) & 0xffu;
        var second = b * isz + f >= p.split;
        if p.split_nhwc != 0u {
            second = ((b * p.ih + iy) * p.iw + ix) * p.ic + ic >= p.split;
        }
        if p.by_channel != 0u {
            second = ic >= p.split;
        }
        let v = table[byte + select(0u, 256u, second)] & 0xffu;
        word = (word & ~(0xffu << (8u * l))) | (v << (8u * l));
    }
    y[idx] = word;
}
