// Quantized add / add_relu of two tensors of the same shape (NHWC4 words).
// fbgemm: c = D(a) + D(b) with the dequantize tables (ATen's vector path for
// flat index < split, scalar after; the index in NCHW order, or NHWC when
// `order` is 1: PyTorch holds both inputs channels-last; `order` 2 (mixed
// formats) comes with split 0), relu, then quantize with 1/so.
// qnnpack: QNNPACK's fixed point, acc = ma*(a-za) + mb*(b-zb), rounded half
// away from zero by `shift` bits.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    total: u32, split: u32, qnnpack: u32, relu: u32,
    inv: f32, zo: i32, lo: i32, shift: u32,
    ma: i32, mb: i32, za: i32, zb: i32,
    order: u32, pad0: u32, pad1: u32, pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> bb: array<u32>;
// [D_v(a), D_s(a), D_v(b), D_s(b)], 256 each.
@group(0) @binding(3) var<storage, read> deq: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

fn add_one(qa: u32, qb: u32, flat: u32) -> u32 {
    if p.qnnpack != 0u {
        let acc = p.ma * (i32(qa) - p.za) + p.mb * (i32(qb) - p.zb);
        let mask = i32((1u << p.shift) - 1u);
        let rem = (acc & mask) - select(0, 1, acc < 0);
        let r = (acc >> p.shift) + select(0, 1, rem > (mask >> 1u));
        return u32(clamp(r + p.zo, p.lo, 255));
    }
    let off = select(0u, 256u, flat >= p.split);
    var s = deq[qa + off] + deq[512u + qb + off];
    if p.relu != 0u {
        s = max(s, 0.0);
    }
    let r = clamp(round(s * p.inv), f32(-p.zo), f32(255 - p.zo));
    return u32(i32(r) + p.zo);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let c4 = idx % p.c4;
    let pix = idx / p.c4;
    let wx = pix % p.w;
    let t = pix / p.w;
    let hy = t % p.h;
    let b = t / p.h;
    let wa = a[idx];
    let wb = bb[idx];
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let c = c4 * 4u + l;
        if c < p.c {
            var flat = ((b * p.c + c) * p.h + hy) * p.w + wx;
            if p.order == 1u {
                flat = ((b * p.h + hy) * p.w + wx) * p.c + c;
            }
            word |= add_one((wa >> (8u * l)) & 0xffu, (wb >> (8u * l)) & 0xffu, flat) << (8u * l);
        }
    }
    y[idx] = word;
}
