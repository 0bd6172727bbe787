// Fused int8 conv2d / linear: packed int8 dot products (dot4I8Packed) and the
// requantization epilogue in one pass. Reads 8-bit activations, writes 8-bit.
//
// Layout, bindings and the epilogue: see common.wgsl (prepended by the host).
//
// One invocation computes one output word: 4 consecutive output channels of
// one output pixel. Specialised by pipeline-overridable constants:
//   WG      workgroup size
//   GATHER  false: the reduction runs over whole input words (groups == 1, or
//           channels per group a multiple of 4); weights are packed
//           [O][kh][kw][ceil(C/g / 4)].
//           true: the reduction (ky, kx, c) is gathered 4 bytes at a time
//           from any channel offset (grouped/depthwise convs with C/g not a
//           multiple of 4); weights are packed [O][ceil(kh*kw*C/g / 4)].

override WG: u32 = 64u;
override GATHER: bool = false;

@group(0) @binding(2) var<storage, read> wt: array<u32>;

fn reduce_words(b: u32, oy: u32, ox: u32, oc: u32) -> i32 {
    let cg4 = (p.cg + 3u) / 4u;
    let cbase = (oc / p.og) * (p.cg / 4u);
    var acc = 0i;
    var wi = oc * p.kq;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_h);
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_w);
            let inside = in_bounds(iy, ix);
            let xbase = ((b * p.h + u32(max(iy, 0))) * p.w + u32(max(ix, 0))) * p.c4 + cbase;
            for (var j = 0u; j < cg4; j++) {
                var xv = p.pad_word;
                if inside {
                    xv = x[xbase + j];
                }
                acc += dot4I8Packed(xv ^ SIGN, wt[wi]);
                wi++;
            }
        }
    }
    return acc;
}

fn load_byte(b: u32, iy: i32, ix: i32, ch: u32) -> u32 {
    if !in_bounds(iy, ix) {
        return p.pad_word & 0xffu;
    }
    let word = x[((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c4 + ch / 4u];
    return (word >> (8u * (ch % 4u))) & 0xffu;
}

fn reduce_gather(b: u32, oy: u32, ox: u32, oc: u32) -> i32 {
    let k = p.kh * p.kw * p.cg;
    let cbase = (oc / p.og) * p.cg;
    var acc = 0i;
    for (var q = 0u; q < p.kq; q++) {
        var packed = 0u;
        for (var l = 0u; l < 4u; l++) {
            let r = q * 4u + l;
            if r < k {
                let ci = r % p.cg;
                let t = r / p.cg;
                let kx = t % p.kw;
                let ky = t / p.kw;
                let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_h);
                let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_w);
                packed |= load_byte(b, iy, ix, cbase + ci) << (8u * l);
            }
        }
        acc += dot4I8Packed(packed ^ SIGN, wt[oc * p.kq + q]);
    }
    return acc;
}

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
    var acc = vec4<i32>(0);
    for (var l = 0u; l < 4u; l++) {
        let oc = o4 * 4u + l;
        if oc >= p.o {
            break;
        }
        if GATHER {
            acc[l] = reduce_gather(b, oy, ox, oc);
        } else {
            acc[l] = reduce_words(b, oy, ox, oc);
        }
    }
    store_out(idx, o4, acc);
}
