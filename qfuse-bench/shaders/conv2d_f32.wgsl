// Benchmark only: the float baseline the fused int8 kernel is compared with.
// f32 activations in NHWC (channels innermost, not padded); output channel
// count a multiple of 4. Deliberately the same effort as the int8 baseline
// kernel (`conv2d.wgsl`): one invocation computes 4 consecutive output
// channels of one output pixel, with no workgroup tiling.
//
// One entry point, three kernels chosen by the OP override:
//   OP 0  conv2d: y = conv(x, w) + bias (ch[o4]), then ReLU if RELU.
//         Unfused baseline: RELU = false, batchnorm and relu run after.
//         Fused baseline: w and bias have the BatchNorm folded in, RELU = true.
//   OP 1  batchnorm (eval), in place on y: y = y * ch[c4] + ch[o4 + c4].
//   OP 2  relu, in place on y.
// Weights are laid out [kh][kw][C/groups][O] so that 4 consecutive output
// channels are one vec4 load.

struct F32Params {
    n: u32, c: u32, h: u32, w: u32,
    o: u32, o4: u32, oh: u32, ow: u32,
    kh: u32, kw: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, cg: u32, og: u32,
    total: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

override WG: u32 = 64u;
override OP: u32 = 0u;
override RELU: bool = false;

@group(0) @binding(0) var<uniform> p: F32Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ch: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

fn in_bounds(iy: i32, ix: i32) -> bool {
    return iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
}

fn conv(idx: u32) -> vec4<f32> {
    let o4 = idx % p.o4;
    var t = idx / p.o4;
    let ox = t % p.ow;
    t = t / p.ow;
    let oy = t % p.oh;
    let b = t / p.oh;
    let oc = o4 * 4u;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride_h + ky) - i32(p.pad_h);
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride_w + kx) - i32(p.pad_w);
            if !in_bounds(iy, ix) {
                continue;
            }
            let xbase = ((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c;
            let wbase = (ky * p.kw + kx) * p.cg * p.o4 + o4;
            if p.og % 4u == 0u {
                // The 4 output channels share their group's input channels.
                let cbase = xbase + (oc / p.og) * p.cg;
                for (var ci = 0u; ci < p.cg; ci++) {
                    acc = fma(vec4<f32>(x[cbase + ci]), wt[wbase + ci * p.o4], acc);
                }
            } else if p.cg == 1u && p.og == 1u {
                // Depthwise: output channel k reads input channel k.
                let xv = vec4<f32>(x[xbase + oc], x[xbase + oc + 1u], x[xbase + oc + 2u], x[xbase + oc + 3u]);
                acc = fma(xv, wt[wbase], acc);
            } else {
                for (var ci = 0u; ci < p.cg; ci++) {
                    var xv: vec4<f32>;
                    for (var l = 0u; l < 4u; l++) {
                        xv[l] = x[xbase + ((oc + l) / p.og) * p.cg + ci];
                    }
                    acc = fma(xv, wt[wbase + ci * p.o4], acc);
                }
            }
        }
    }
    var v = acc + ch[o4];
    if RELU {
        v = max(v, vec4<f32>(0.0));
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if idx >= p.total {
        return;
    }
    if OP == 0u {
        y[idx] = conv(idx);
    } else if OP == 1u {
        let c4 = idx % p.o4;
        y[idx] = fma(y[idx], ch[c4], ch[p.o4 + c4]);
    } else {
        y[idx] = max(y[idx], vec4<f32>(0.0));
    }
}
