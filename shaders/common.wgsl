// Common prefix of every qfuse conv kernel (after the float prelude
// float.wgsl, whose ffma / fdiv / fmul_exact it calls): the uniform block, the activation,
// epilogue and output bindings, and the exact requantization epilogue. The
// host prepends this file to each kernel file (see Kernel::source() in
// src/gpu/context.rs); the kernel file adds its weight binding (binding 2,
// whose packing is its own) and its entry point `main`.
//
// Layout: activations are NHWC with the channels packed 4 per u32 word
// ("NHWC4"; a linear layer's [N, K] is the 1x1 image [N, 1, 1, K]). Words hold
// quint8 bytes; kernels shift them to signed (x ^ 0x80 = x - 128) for the
// int8 products, and the host folds (128 - zp) * Σw into the integer bias.
// Padded positions read `pad_word` (the input zero point in every byte), i.e.
// the real value 0. Outputs are NHWC4 words too.

struct Params {
    n: u32, c4: u32, h: u32, w: u32,
    o: u32, o4: u32, oh: u32, ow: u32,
    kh: u32, kw: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, dil_h: u32, dil_w: u32,
    cg: u32, og: u32, kq: u32, pad_word: u32,
    // `total`: the number of work items the dispatch covers (output words,
    // or output tiles for the tiled kernel).
    zp_out: i32, lo: i32, hi: i32, total: u32,
    // The epilogue's form (0: scaled, 1: oneDNN, 2: oneDNN f32 + Inductor
    // quantize, ..., 8: oneDNN's f32 output, post-op code in pad2), `opaque` (always 0, see
    // `opaque()`), and oneDNN's input scale, 1/output scale and the output
    // type's offset (128 for qint8 images).
    form: u32, opaque: u32, in_scale: f32, inv_out: f32,
    offset: i32, pad0: u32, pad1: u32, pad2: u32,
}

// One output channel's requantization constants (quant::ChannelEpilogue).
struct Chan {
    bias_i32: i32,
    bias_f32: f32,
    mult: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read> chans: array<Chan>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

const SIGN: u32 = 0x80808080u;

// Set (to true) by the host only for layers whose epilogue calls the float
// prelude (form 7, oneDNN's swish; form 3, the sum post-op's ffma): elsewhere those branches are dead code
// and the driver does not compile the prelude's ffma / fdiv into the pipeline.
override EXACT_FLOAT: bool = false;

// f32(a), correctly rounded for every i32: both halves convert exactly and
// the one f32 addition rounds to nearest even. (WGSL lets a plain f32(i32)
// round either way past 2^24.)
fn exact_f32(a: i32) -> f32 {
    let lo = a & 0xffff;
    return f32(a - lo) + f32(lo);
}

// `v` itself: `p.opaque` is 0, but the compiler cannot know it, so a product
// passed through here is never contracted with the addition that follows it
// into a fused multiply-add (which rounds once instead of twice). WGSL, SPIR-V
// without NoContraction and the drivers below them may contract `a * b + c`.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.opaque);
}

// oneDNN's swish eltwise, alpha 1 (quant::onednn_swish, bit for bit): the x64
// JIT's exp and logistic. Its fused multiply-adds are the float prelude's
// exact ffma, its division the exact fdiv (WGSL's fma() and `/` are not
// guaranteed to round once / correctly), and the products that may produce
// subnormals (2^-126 * p, s * v) are fmul_exact (a GPU may flush subnormal
// f32). The result passes opaque(): a caller may add to it.
fn onednn_swish(v: f32) -> f32 {
    // logistic(v): t = exp(n), n = -|v|
    let n = bitcast<f32>(bitcast<u32>(v) | 0x80000000u);
    let under = n < bitcast<f32>(0xc2aeac50u);
    let xc = max(n, bitcast<f32>(0xc2aeac50u)); // n <= 0 < the upper bound
    let fx = opaque(xc * bitcast<f32>(0x3fb8aa3bu)) + 0.5;
    let k = floor(fx);
    let r = ffma(bitcast<u32>(-k), 0x3f317218u, bitcast<u32>(xc));
    var q = 0x3c07cfceu;
    q = ffma(q, r, 0x3d2b9d0du);
    q = ffma(q, r, 0x3e2aad40u);
    q = ffma(q, r, 0x3efffee3u);
    q = ffma(q, r, 0x3f7ffffbu);
    q = ffma(q, r, 0x3f800000u);
    // 2^(k-1) from the exponent bits (k = -126: bits 0, +0), 0 below the bound
    let pw = select(u32(i32(k) - 1 + 127) << 23u, 0u, under);
    let t = fmul_exact(fmul_exact(q, pw), 0x40000000u);
    let t1 = opaque(bitcast<f32>(t)) + 1.0;
    let y = fdiv(t, bitcast<u32>(t1));
    let s = select(bitcast<u32>(1.0 - bitcast<f32>(y)), y, (bitcast<u32>(v) & 0x80000000u) != 0u);
    return opaque(bitcast<f32>(fmul_exact(s, bitcast<u32>(v))));
}

// The epilogue (quant::EpilogueForm). Scaled (fbgemm, qnnpack, ONNX Runtime):
// y = clamp(rint((f32(acc + bias_i32) + bias_f32) * mult) + zp, lo, hi), an
// addition then a product: nothing to contract. oneDNN (mult = weight scale,
// bias_f32 = the float bias): v = f32(f32(a * in_scale) * mult) + bias_f32,
// y = clamp(rint(f32(v * inv_out) + f32(zp_true)) + offset, lo, hi), every step
// rounded on its own (the two products before an addition pass opaque()).
fn requant(oc: u32, acc: i32) -> u32 {
    let c = chans[oc];
    if p.form == 1u {
        let a = exact_f32(acc + c.bias_i32);
        let v = opaque(opaque(a * p.in_scale) * c.mult) + c.bias_f32;
        let zt = p.zp_out - p.offset;
        let t = opaque(v * p.inv_out) + f32(zt);
        let r = clamp(round(t), f32(p.lo - p.offset), f32(p.hi - p.offset));
        return u32(i32(r) + p.offset);
    }
    // oneDNN's hardswish post-op (EpilogueForm::OnednnHardswish, form 5): the
    // same v, e = f32(max(min(f32(f32(v * f32(1/6)) + 0.5), 1), 0) * v), then
    // as form 1 (the products before an addition pass opaque()).
    if p.form == 5u {
        let a = exact_f32(acc + c.bias_i32);
        let v = opaque(opaque(a * p.in_scale) * c.mult) + c.bias_f32;
        let e = onednn_hardswish(v);
        let zt = p.zp_out - p.offset;
        let t = opaque(e * p.inv_out) + f32(zt);
        let r = clamp(round(t), f32(p.lo - p.offset), f32(p.hi - p.offset));
        return u32(i32(r) + p.offset);
    }
    // oneDNN's swish post-op (EpilogueForm::OnednnSwish, form 7): the same v,
    // e = onednn_swish(v), then as form 1.
    if EXACT_FLOAT && p.form == 7u {
        let a = exact_f32(acc + c.bias_i32);
        let v = opaque(opaque(a * p.in_scale) * c.mult) + c.bias_f32;
        let e = onednn_swish(v);
        let zt = p.zp_out - p.offset;
        let t = opaque(e * p.inv_out) + f32(zt);
        let r = clamp(round(t), f32(p.lo - p.offset), f32(p.hi - p.offset));
        return u32(i32(r) + p.offset);
    }
    // oneDNN's f32 output quantized by Inductor's C++ (EpilogueForm::OnednnF32):
    // the same v, then y = clamp(rint(f32(v * inv_out)) + zp, lo, hi).
    if p.form == 2u {
        let a = exact_f32(acc + c.bias_i32);
        let v = opaque(opaque(a * p.in_scale) * c.mult) + c.bias_f32;
        let r = clamp(round(v * p.inv_out), f32(p.lo - p.zp_out), f32(p.hi - p.zp_out));
        return u32(i32(r) + p.zp_out);
    }
    let v = exact_f32(acc + c.bias_i32) + c.bias_f32;
    let r = clamp(round(v * c.mult), f32(p.lo - p.zp_out), f32(p.hi - p.zp_out));
    return u32(i32(r) + p.zp_out);
}

// oneDNN's hardswish eltwise: f32(max(min(f32(f32(v * f32(1/6)) + 0.5), 1), 0) * v)
// (the product before the addition passes opaque()).
fn onednn_hardswish(v: f32) -> f32 {
    // f32(1/6) = 0x3e2aaaab, as bits (an abstract-float constant may round either way)
    let h = clamp(opaque(v * bitcast<f32>(0x3e2aaaabu)) + 0.5, 0.0, 1.0);
    return h * v;
}

// oneDNN's f32 output (quant::EpilogueForm::OnednnFloat, form 8): v as under
// form 1, then the post-op `p.pad2` (quant::OnednnPost::code: 0 none, 1 relu
// as `v < 0 ? 0 : v`, 2 hardswish, 3 swish: compiled with EXACT_FLOAT only).
fn onednn_float(oc: u32, acc: i32) -> f32 {
    let c = chans[oc];
    let a = exact_f32(acc + c.bias_i32);
    let v = opaque(opaque(a * p.in_scale) * c.mult) + c.bias_f32;
    if p.pad2 == 1u {
        return select(v, 0.0, v < 0.0);
    }
    if p.pad2 == 2u {
        return onednn_hardswish(v);
    }
    if EXACT_FLOAT && p.pad2 == 3u {
        return onednn_swish(v);
    }
    return v;
}

// oneDNN's sum post-op (quant::EpilogueForm::OnednnSum, form 3): `a` is the
// second addend's stored byte (p.pad0: its scale sa as f32 bits, p.pad1: its
// zero point's stored byte); v as under form 1,
// t = fma(f32(a - za), sa, v) rounded once (the float prelude's ffma:
// compiled with EXACT_FLOAT, which the host sets for form 3),
// u = f32(t * inv_out), y = clamp(rint(f32(u + f32(zp_true))) + offset)
// (relu: the clamp at zp).
fn requant_sum(oc: u32, acc: i32, a: u32) -> u32 {
    let c = chans[oc];
    let x = exact_f32(acc + c.bias_i32);
    let v = opaque(opaque(x * p.in_scale) * c.mult) + c.bias_f32;
    let d = f32(i32(a) - i32(p.pad1));
    // (without EXACT_FLOAT, which the host never leaves off for form 3: two roundings)
    var t = opaque(v + opaque(d * bitcast<f32>(p.pad0)));
    if EXACT_FLOAT {
        t = bitcast<f32>(ffma(bitcast<u32>(d), p.pad0, bitcast<u32>(v)));
    }
    let u = opaque(t * p.inv_out);
    let zt = p.zp_out - p.offset;
    let r = clamp(round(u + f32(zt)), f32(p.lo - p.offset), f32(p.hi - p.offset));
    return u32(i32(r) + p.offset);
}

// Requantizes the accumulators of output word `o4` (channels 4*o4 .. 4*o4+3)
// into one packed output word; channels past `p.o` give 0 bytes.
fn requant_word(o4: u32, acc: vec4<i32>) -> u32 {
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let oc = o4 * 4u + l;
        if oc >= p.o {
            break;
        }
        word |= requant(oc, acc[l]) << (8u * l);
    }
    return word;
}

fn in_bounds(iy: i32, ix: i32) -> bool {
    return iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
}

// The activation word at K word k of pixel m (its batch b and its input
// origin iy0, ix0), unsigned: `pad_word` at padded positions, 0 past K or
// past M (the weights there are 0, or the pixel is not stored).
fn act_word(k: u32, m_ok: bool, b: u32, iy0: i32, ix0: i32, cg4: u32) -> u32 {
    if k >= p.kq || !m_ok {
        return 0u;
    }
    let j = k % cg4;
    let tap = k / cg4;
    let iy = iy0 + i32((tap / p.kw) * p.dil_h);
    let ix = ix0 + i32((tap % p.kw) * p.dil_w);
    if in_bounds(iy, ix) {
        return x[((b * p.h + u32(iy)) * p.w + u32(ix)) * p.c4 + j];
    }
    return p.pad_word;
}

// The 4 output channels of output word `w` against activation word `a`.
fn dot4(a: u32, w: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(a, w.x), dot4I8Packed(a, w.y), dot4I8Packed(a, w.z), dot4I8Packed(a, w.w));
}

// Split-K pass 1 (tiled.wgsl, coop.wgsl): the raw i32 accumulators of output
// word o4 of pixel m for split `split`, as bit patterns at
// y[((split * M + m) * O4 + o4) * 4 + l] (what splitk.wgsl reads).
fn store_partial(split: u32, m: u32, o4: u32, acc: vec4<i32>) {
    let base = ((split * p.n * p.oh * p.ow + m) * p.o4 + o4) * 4u;
    let bits = bitcast<vec4<u32>>(acc);
    y[base] = bits.x;
    y[base + 1u] = bits.y;
    y[base + 2u] = bits.z;
    y[base + 3u] = bits.w;
}

// The output word at `idx` (output word `o4` of its pixel): requant_word, or
// under form 3 the sum post-op with the addend word the host copied into `y`
// before the dispatch (every kernel reads and writes only its own words).
fn requant_at(idx: u32, o4: u32, acc: vec4<i32>) -> u32 {
    if p.form != 3u {
        return requant_word(o4, acc);
    }
    let a = y[idx];
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        let oc = o4 * 4u + l;
        if oc >= p.o {
            break;
        }
        word |= requant_sum(oc, acc[l], (a >> (8u * l)) & 0xffu) << (8u * l);
    }
    return word;
}

// Stores output word `idx` (output word `o4` of its pixel). Under form 8 (an
// f32 output) the four channels' f32 values go to words 4*idx + l (NHWC with
// the channels padded to a multiple of 4, one f32 per word; padding
// channels 0.0); else requant_at's packed word goes to word idx.
fn store_out(idx: u32, o4: u32, acc: vec4<i32>) {
    if p.form == 8u {
        for (var l = 0u; l < 4u; l++) {
            let oc = o4 * 4u + l;
            var v = 0.0;
            if oc < p.o {
                v = onednn_float(oc, acc[l]);
            }
            y[4u * idx + l] = bitcast<u32>(v);
        }
        return;
    }
    y[idx] = requant_at(idx, o4, acc);
}
