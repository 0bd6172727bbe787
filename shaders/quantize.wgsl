// quantize: f32 NCHW (a model input) or NHWC4F (NHWC = true: an f32 tensor
// computed on the GPU, one f32 per word, channels padded to 4) -> quint8
// NHWC4 (4 channels per u32 word).
// q = clamp(i32(rint(x * inv_scale)) + zp, 0, 255), rint ties to even; the one
// multiplication and round() are exact in WGSL, so this equals the CPU rule.

struct Params {
    c: u32, h: u32, w: u32, c4: u32,
    total: u32, zp: i32, inv: f32, pad: u32,
}

override WG: u32 = 64u;
override NHWC: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

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
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let c = c4 * 4u + l;
        if c < p.c {
            var v = 0.0;
            if NHWC {
                v = x[4u * idx + l];
            } else {
                v = x[((b * p.c + c) * p.h + hy) * p.w + wx];
            }
            let r = clamp(round(v * p.inv), f32(-p.zp), f32(255 - p.zp));
            word |= u32(i32(r) + p.zp) << (8u * l);
        }
    }
    y[idx] = word;
}
