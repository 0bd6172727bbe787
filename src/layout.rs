//! Shapes and layouts, shared by the CPU reference and the GPU (neither
//! depends on the other for these).
//!
//! Host tensors are NCHW bytes (or `[N, K]`). The GPU activation layout is
//! "NHWC4": NHWC with the channels packed 4 bytes per u32 word (little-endian:
//! channel 4j+l in byte l of word j), channel count rounded up to a multiple
//! of 4 with zero bytes. A `[N, K]` tensor is the `[N, K, 1, 1]` image.
//!
//! A float32 tensor computed on the GPU (a conv/linear with an f32 output)
//! has the same order with one f32 per word ("NHWC4F"): element `(n, c, h,
//! w)` is word `((n*H + h)*W + w) * 4*ceil(C/4) + c`, i.e. word `4*j + l`
//! for the packed byte layout's word `j` and byte `l`; padding channels
//! hold 0.0.

use crate::error::{Error, Result};

/// Checks that `len` elements fill `shape` exactly.
pub fn check_data_len(len: usize, shape: &[usize]) -> Result<()> {
    let want = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if want != Some(len) {
        let want = want.map_or("more than usize::MAX".to_string(), |w| w.to_string());
        return Err(Error::shape(
            "input data",
            format!("{len} elements for shape {shape:?} ({want} expected)"),
        ));
    }
    Ok(())
}

/// `(c, h, w)` of one sample's shape (`[C, H, W]`, `[C, H]` or `[C]`); other
/// ranks give `(1, 1, 1)`.
pub fn chw(shape: &[usize]) -> (usize, usize, usize) {
    match *shape {
        [c] => (c, 1, 1),
        [c, h] => (c, h, 1),
        [c, h, w] => (c, h, w),
        _ => (1, 1, 1),
    }
}

/// [`chw`] as u32 (kernel uniforms).
pub fn chw_u32(shape: &[usize]) -> (u32, u32, u32) {
    let (c, h, w) = chw(shape);
    (c as u32, h as u32, w as u32)
}

/// True when two per-sample shapes have the same NHWC4 layout (so a reshape
/// between them moves no byte).
pub fn same_layout(a: &[usize], b: &[usize]) -> bool {
    let (x, y) = (chw(a), chw(b));
    x == y || (x.1 == 1 && x.2 == 1 && y.1 == 1 && y.2 == 1 && x.0 == y.0)
}

/// A batched shape as [`pack`] and [`unpack`] see it (`[N, C, H, W]` or
/// `[N, K]`): a 3-dimensional `[N, C, H]` becomes `[N, C, H, 1]`.
pub fn nchw4(shape: &[usize]) -> Vec<usize> {
    match *shape {
        [n, c, h] => vec![n, c, h, 1],
        _ => shape.to_vec(),
    }
}

/// `(n, c, h, w)` of a logical NCHW (or `[N, K]`, or `[N, C, H]` as
/// `[N, C, H, 1]`) shape.
pub fn nchw(shape: &[usize]) -> Result<(usize, usize, usize, usize)> {
    match *shape {
        [n, k] => Ok((n, k, 1, 1)),
        [n, c, h] => Ok((n, c, h, 1)),
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(Error::shape(
            "tensor",
            format!("shape {shape:?}: expected [N, C, H, W], [N, C, H] or [N, K]"),
        )),
    }
}

/// Number of u32 words a tensor of this shape (`[N, C, H, W]`, `[N, C, H]`
/// or `[N, K]`) occupies on the GPU.
pub fn words(shape: &[usize]) -> Result<usize> {
    let (n, c, h, w) = nchw(&nchw4(shape))?;
    Ok(n * h * w * c.div_ceil(4))
}

/// Number of u32 words a tensor of this shape occupies on the GPU as
/// float32 (NHWC4F: four words per NHWC4 word).
pub fn f32_words(shape: &[usize]) -> Result<usize> {
    words(shape)?.checked_mul(4).ok_or_else(|| {
        Error::shape(
            "gpu tensor",
            format!("shape {shape:?} is too large for f32 words"),
        )
    })
}

/// Unpacks NHWC4F words (one f32 per word) into NCHW f32 values.
pub fn unpack_f32(words: &[u32], shape: &[usize]) -> Result<Vec<f32>> {
    let (n, c, h, w) = nchw(shape)?;
    let c4 = 4 * c.div_ceil(4);
    if words.len() != n * h * w * c4 {
        return Err(Error::shape(
            "gpu f32 tensor",
            format!("{} words for shape {shape:?}", words.len()),
        ));
    }
    let mut out = vec![0f32; n * c * h * w];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * c + ch) * h + y) * w + x] =
                        f32::from_bits(words[((b * h + y) * w + x) * c4 + ch]);
                }
            }
        }
    }
    Ok(out)
}

/// Packs NCHW f32 values into NHWC4F words (padding channels 0.0).
pub fn pack_f32(data: &[f32], shape: &[usize]) -> Result<Vec<u32>> {
    let (n, c, h, w) = nchw(shape)?;
    check_data_len(data.len(), shape)?;
    let c4 = 4 * c.div_ceil(4);
    let mut out = vec![0u32; n * h * w * c4];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c4 + ch] =
                        data[((b * c + ch) * h + y) * w + x].to_bits();
                }
            }
        }
    }
    Ok(out)
}

/// Packs NCHW bytes into NHWC4 words.
pub fn pack(data: &[u8], shape: &[usize]) -> Result<Vec<u32>> {
    let (n, c, h, w) = nchw(shape)?;
    check_data_len(data.len(), shape)?;
    let c4 = c.div_ceil(4);
    let mut out = vec![0u32; n * h * w * c4];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = data[((b * c + ch) * h + y) * w + x] as u32;
                    out[((b * h + y) * w + x) * c4 + ch / 4] |= v << (8 * (ch % 4));
                }
            }
        }
    }
    Ok(out)
}

/// Unpacks NHWC4 words into NCHW bytes.
pub fn unpack(words: &[u32], shape: &[usize]) -> Result<Vec<u8>> {
    let (n, c, h, w) = nchw(shape)?;
    let c4 = c.div_ceil(4);
    if words.len() != n * h * w * c4 {
        return Err(Error::shape(
            "gpu tensor",
            format!("{} words for shape {shape:?}", words.len()),
        ));
    }
    let mut out = vec![0u8; n * c * h * w];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let word = words[((b * h + y) * w + x) * c4 + ch / 4];
                    out[((b * c + ch) * h + y) * w + x] = (word >> (8 * (ch % 4))) as u8;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pack_roundtrip() {
        let shape = [2, 5, 3, 2];
        let data: Vec<u8> = (0..60).map(|i| (i * 7 + 3) as u8).collect();
        let w = super::pack(&data, &shape).unwrap();
        assert_eq!(w.len(), 2 * 3 * 2 * 2);
        assert_eq!(super::unpack(&w, &shape).unwrap(), data);
        // channel 1 of pixel (0,0,0) sits in byte 1 of word 0
        assert_eq!((w[0] >> 8) as u8, data[6]);
    }

    #[test]
    fn pack_f32_roundtrip() {
        let shape = [2, 5, 3, 2];
        let data: Vec<f32> = (0..60).map(|i| i as f32 * 0.75 - 7.0).collect();
        let w = super::pack_f32(&data, &shape).unwrap();
        assert_eq!(w.len(), super::f32_words(&shape).unwrap());
        assert_eq!(super::unpack_f32(&w, &shape).unwrap(), data);
        // channel 1 of pixel (0,0,0) is word 1; pixel (0,0,1) starts at word 8
        assert_eq!(f32::from_bits(w[1]), data[6]);
        assert_eq!(f32::from_bits(w[8]), data[1]);
        assert_eq!(w[5..8], [0, 0, 0]);
    }

    #[test]
    fn words_of_every_rank() {
        assert_eq!(super::words(&[2, 5, 3, 2]).unwrap(), 2 * 3 * 2 * 2);
        // [N, C, H] is [N, C, H, 1] (a gather or reshape output of rank 2).
        assert_eq!(super::words(&[2, 5, 3]).unwrap(), 2 * 3 * 2);
        assert_eq!(super::words(&[2, 5]).unwrap(), 2 * 2);
        assert!(super::words(&[2]).is_err());
    }
}
