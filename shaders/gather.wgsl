// gather: each invocation writes one packed output word, its 4 bytes read
// through a host-built table from the inputs' packed words. The table holds,
// per byte of one packed output sample (NHWC4 order: word * 4 + lane), the
// byte's source as a byte position in the per-sample concatenation of the
// inputs' packed words, 0xfffffe00 + b for the constant byte b (a fill
// entry, written by every dispatch), or 0xffffffff for a padding byte. Byte
// positions stay below 0xfffffe00. With several
// inputs there is one dispatch per input: it fills the bytes whose source
// lies in its range [lo, hi) and keeps the others (merge), the first one
// writing zero to every byte it does not fill.

struct Params {
    total: u32,     // output words of the batch
    out_wps: u32,   // output words per sample
    in_wps: u32,    // this input's words per sample
    lo: u32,        // first source byte position of this input
    hi: u32,        // one past its last
    merge: u32,     // keep the bytes this dispatch does not fill
    pad0: u32,
    pad1: u32,
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
    let b = idx / p.out_wps;
    let w = idx % p.out_wps;
    var word = 0u;
    if p.merge != 0u {
        word = y[idx];
    }
    for (var l = 0u; l < 4u; l++) {
        let e = table[w * 4u + l];
        var v = 0u;
        if e >= 0xfffffe00u && e < 0xffffff00u {
            v = e & 0xffu;
        } else if e < p.lo || e >= p.hi {
            continue;
        } else {
            let r = e - p.lo;
            v = (x[b * p.in_wps + r / 4u] >> (8u * (r % 4u))) & 0xffu;
        }
        word = (word & ~(0xffu << (8u * l))) | (v << (8u * l));
    }
    y[idx] = word;
}
