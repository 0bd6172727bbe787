// Int8 GEMV-shaped conv2d / linear: few output pixels (a linear head at
// small batch), one group, a 1x1 kernel with stride 1 and no padding (so
// output pixel m reads input pixel m: x[m * c4 + k]).
//
// Layout, bindings and the epilogue: see common.wgsl (prepended by the host).
// Weights: the tiled kernel's packing (tiled.wgsl: wt[k * O4 + o4] holds the
// 4 channels' words at K word k).
//
// A workgroup of WG = GW * KL invocations computes GW output words (4
// channels each) of MB = 4 output pixels: invocation (kl, w) (lid = kl * GW
// + w) accumulates K words kl, kl + KL, kl + 2 KL, ... of output word w for
// the 4 pixels (consecutive invocations read consecutive weight vectors of
// one K word; the activation word is the same for the GW invocations of a
// K lane), then the KL partial sums of each output are added in workgroup
// memory (a tree of i32 additions: wrapping integer addition is
// associative, so the sum is the exact accumulator, as in every other
// kernel) and K lane 0 applies the epilogue.
//
// Pipeline-overridable constants:
//   WG  workgroup size, GW * KL, KL a power of two, WG <= 256
//   GW  output words per workgroup
// `p.total` is the number of workgroups, ceil(M / 4) * ceil(O4 / GW).

override WG: u32 = 256u;
override GW: u32 = 16u;

const MB: u32 = 4u;

@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;

var<workgroup> red: array<vec4<i32>, 1024>; // [MB][WG]

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = wid.x + wid.y * nwg.x;
    if idx >= p.total {
        return;
    }
    let kl_n = WG / GW;
    let w_tiles = (p.o4 + GW - 1u) / GW;
    let nw = (idx % w_tiles) * GW + lid % GW;
    let m0 = (idx / w_tiles) * MB;
    let kl = lid / GW;
    let m_total = p.n * p.oh * p.ow;
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    if nw < p.o4 {
        for (var k = kl; k < p.kq; k += kl_n) {
            let w = wt[k * p.o4 + nw];
            // Rows past M read row 0 (never stored).
            let r0 = select(0u, m0, m0 < m_total);
            let r1 = select(0u, m0 + 1u, m0 + 1u < m_total);
            let r2 = select(0u, m0 + 2u, m0 + 2u < m_total);
            let r3 = select(0u, m0 + 3u, m0 + 3u < m_total);
            a0 += dot4(x[r0 * p.c4 + k] ^ SIGN, w);
            a1 += dot4(x[r1 * p.c4 + k] ^ SIGN, w);
            a2 += dot4(x[r2 * p.c4 + k] ^ SIGN, w);
            a3 += dot4(x[r3 * p.c4 + k] ^ SIGN, w);
        }
    }
    red[lid] = a0;
    red[WG + lid] = a1;
    red[2u * WG + lid] = a2;
    red[3u * WG + lid] = a3;
    workgroupBarrier();
    for (var s = kl_n / 2u; s > 0u; s /= 2u) {
        if kl < s {
            let o = lid + s * GW;
            red[lid] += red[o];
            red[WG + lid] += red[WG + o];
            red[2u * WG + lid] += red[2u * WG + o];
            red[3u * WG + lid] += red[3u * WG + o];
        }
        workgroupBarrier();
    }
    if kl == 0u && nw < p.o4 {
        for (var r = 0u; r < MB; r++) {
            let m = m0 + r;
            if m < m_total {
                store_out(m * p.o4 + nw, nw, red[r * WG + lid]);
            }
        }
    }
}
