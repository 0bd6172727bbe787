// Depthwise int8 conv2d (groups == in_channels, any channel multiplier
// og = O / C): output channel oc reads input channel oc / og only.
//
// Layout, bindings and the epilogue: see common.wgsl (prepended by the host).
//
// One invocation computes one output word (4 output channels of one pixel).
// Per tap it loads the input bytes of its 4 channels as one word (a single
// load when og == 1: output word o4 is input word o4), shifts them to signed
// and multiplies them lane-wise with the tap's 4 weights: 4 independent i32
// accumulators, no reduction across lanes.
//
// Weights are packed [O4][kh*kw]: byte l of wt[o4 * kh*kw + t] is the weight
// of channel 4*o4+l at tap t (0 past O).
//
// Pipeline-overridable constants:
//   WG  workgroup size

override WG: u32 = 64u;

@group(0) @binding(2) var<storage, read> wt: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    let o4 = idx % p.o4;
    var t = idx / p.o4;
    let ox = t % p.ow;
    t = t / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    // Input word and bit offset of each lane's input channel.
    var cw: vec4<u32>;
    var sh: vec4<u32>;
    for (var l = 0u; l < 4u; l++) {
        let ic = min(o4 * 4u + l, p.o - 1u) / p.og;
        cw[l] = ic / 4u;
        sh[l] = 8u * (ic % 4u);
    }
    let direct = p.og == 1u;
    let taps = p.kh * p.kw;
    var wi = o4 * taps;
    var acc = vec4<i32>(0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_h);
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_w);
            var xw = p.pad_word;
            if in_bounds(iy, ix) {
                let base = ((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c4;
                if direct {
                    xw = x[base + o4];
                } else {
                    xw = 0u;
                    for (var l = 0u; l < 4u; l++) {
                        xw |= ((x[base + cw[l]] >> sh[l]) & 0xffu) << (8u * l);
                    }
                }
            }
            acc += unpack4xI8(xw ^ SIGN) * unpack4xI8(wt[wi]);
            wi++;
        }
    }
    store_out(idx, o4, acc);
}
