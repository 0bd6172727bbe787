//! Reading and writing `.npy` arrays (the header through the `npyz` crate),
//! with errors that name the file and the problem.
//!
//! Reading checks the whole file before it returns data: a C-ordered array of
//! the expected dtype, exactly as many data bytes as the header's shape needs
//! (a truncated file and trailing bytes after the array are both errors), and,
//! for float32, only finite values (NaN and infinity have no int8 value; the
//! error names the first such element). [`F32Reader`] reads an array in
//! pieces along its first dimension.
//!
//! Writing never leaves a partial file at the destination: [`F32Writer`]
//! writes to a temporary file in the same folder and renames it over the
//! destination only once every element is written and flushed to disk. An
//! error, or a writer dropped unfinished, removes the temporary file; a
//! process killed mid-write leaves at most that hidden temporary file
//! (`.NAME.PID.tmp`), never a truncated `NAME`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::error::{Error, Result};

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn os_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An opened array: the reader positioned at its first data byte.
struct Opened {
    reader: BufReader<File>,
    descr: String,
    shape: Vec<usize>,
    numel: usize,
}

/// Opens a `.npy` file, checks its header (C order, one of `dtypes`: pairs of
/// numpy type string and item size) and that the file holds exactly the data
/// the header's shape needs.
fn open(path: &Path, dtypes: &[(&str, usize)], expected: &str) -> Result<Opened> {
    let file = File::open(path).map_err(|e| os_err(path, e))?;
    let file_len = file.metadata().map_err(|e| os_err(path, e))?.len();
    let mut reader = BufReader::new(file);
    let header = npyz::NpyFile::new(&mut reader)
        .map_err(|e| io_err(path, format!("not a .npy file ({e})")))?;
    if header.order() != npyz::Order::C {
        return Err(io_err(
            path,
            "Fortran-ordered arrays are not supported (save a C-contiguous array)",
        ));
    }
    let descr = header.dtype().descr();
    let raw_shape = header.shape().to_vec();
    drop(header);
    let shape = raw_shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| io_err(path, format!("shape {raw_shape:?} is too large")))?;
    let Some(&(_, item)) = dtypes.iter().find(|(t, _)| descr == format!("'{t}'")) else {
        return Err(io_err(
            path,
            format!("dtype is {descr}, expected {expected}"),
        ));
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(item).is_some())
        .ok_or_else(|| io_err(path, format!("shape {shape:?} is too large")))?;
    let offset = reader.stream_position().map_err(|e| os_err(path, e))?;
    let have = file_len.saturating_sub(offset);
    let need = (numel * item) as u64;
    if have < need {
        return Err(io_err(
            path,
            format!(
                "truncated: shape {shape:?} of {descr} needs {need} bytes of data, the file has {have}"
            ),
        ));
    }
    if have > need {
        return Err(io_err(
            path,
            format!(
                "{} bytes of trailing data after the {shape:?} array (a .npy file holds one array and nothing after it)",
                have - need
            ),
        ));
    }
    Ok(Opened {
        reader,
        descr,
        shape,
        numel,
    })
}

fn read_bytes(o: &mut Opened, path: &Path, bytes: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; bytes];
    o.reader
        .read_exact(&mut buf)
        .map_err(|e| io_err(path, format!("truncated or unreadable data ({e})")))?;
    Ok(buf)
}

/// The multi-index (C order) of flat element `i` of an array of `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

/// Reads a float32 `.npy` array in pieces along its first dimension (or
/// whole, with [`read_f32`]). Every value read is checked to be finite.
pub struct F32Reader {
    path: PathBuf,
    opened: Opened,
    done: usize,
}

impl F32Reader {
    /// Opens the file and checks its header and size (not yet the values).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let opened = open(path, &[("<f4", 4)], "float32 (<f4)")?;
        Ok(F32Reader {
            path: path.to_path_buf(),
            opened,
            done: 0,
        })
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.opened.shape
    }

    /// Elements not read yet.
    pub fn remaining(&self) -> usize {
        self.opened.numel - self.done
    }

    /// Reads the next `count` elements (C order). An error if fewer remain,
    /// or if one of them is NaN or infinite (naming its index).
    pub fn read(&mut self, count: usize) -> Result<Vec<f32>> {
        if count > self.remaining() {
            return Err(io_err(
                &self.path,
                format!(
                    "asked for {count} more elements, {} remain",
                    self.remaining()
                ),
            ));
        }
        let bytes = read_bytes(&mut self.opened, &self.path, count * 4)?;
        let data: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            let at = self.done + i;
            return Err(io_err(
                &self.path,
                format!(
                    "element {at} (index {:?}) is {}: qfuse takes finite values only (NaN and infinity have no int8 value)",
                    unravel(at, &self.opened.shape),
                    data[i]
                ),
            ));
        }
        self.done += count;
        Ok(data)
    }
}

/// Reads a float32 array; returns the data (C order) and the shape. Checks
/// the file's size against its header and that every value is finite.
pub fn read_f32(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut r = F32Reader::open(path)?;
    let data = r.read(r.remaining())?;
    Ok((data, r.opened.shape))
}

/// Reads an integer array (int64 or int32), as i64.
pub fn read_i64(path: impl AsRef<Path>) -> Result<(Vec<i64>, Vec<usize>)> {
    let path = path.as_ref();
    let mut o = open(path, &[("<i8", 8), ("<i4", 4)], "int64 or int32")?;
    let numel = o.numel;
    let data = if o.descr == "'<i8'" {
        read_bytes(&mut o, path, numel * 8)?
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    } else {
        read_bytes(&mut o, path, numel * 4)?
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect()
    };
    Ok((data, o.shape))
}

/// Reads an array of any element type an ONNX model's inputs and outputs
/// use here (float32, uint8, int8, int32, int64) as an ONNX [`Tensor`]
/// (float values are not checked for finiteness: they are data to compare,
/// not input to quantize).
///
/// [`Tensor`]: crate::onnx::Tensor
pub fn read_tensor(path: impl AsRef<Path>) -> Result<crate::onnx::Tensor> {
    use crate::onnx::{Tensor, TensorData};
    let path = path.as_ref();
    let mut o = open(
        path,
        &[("<f4", 4), ("|u1", 1), ("|i1", 1), ("<i4", 4), ("<i8", 8)],
        "float32, uint8, int8, int32 or int64",
    )?;
    let n = o.numel;
    let descr = o.descr.clone();
    let data = match descr.as_str() {
        "'|u1'" => TensorData::U8(read_bytes(&mut o, path, n)?),
        "'|i1'" => TensorData::I8(
            read_bytes(&mut o, path, n)?
                .into_iter()
                .map(|b| b as i8)
                .collect(),
        ),
        "'<f4'" => TensorData::F32(
            read_bytes(&mut o, path, n * 4)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        "'<i4'" => TensorData::I32(
            read_bytes(&mut o, path, n * 4)?
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        _ => TensorData::I64(
            read_bytes(&mut o, path, n * 8)?
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
    };
    Ok(Tensor {
        dims: o.shape,
        data,
    })
}

/// Writes a float32 `.npy` array of a shape given up front, in pieces, to a
/// temporary file that [`F32Writer::finish`] renames to the destination. If
/// the writer is dropped before `finish` (an error on the way), the temporary
/// file is removed and the destination is left as it was.
pub struct F32Writer {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    numel: usize,
    written: usize,
}

impl F32Writer {
    /// Creates the temporary file (`.NAME.PID.tmp` beside `path`) and writes
    /// the header.
    pub fn create(path: impl AsRef<Path>, shape: &[usize]) -> Result<Self> {
        let path = path.as_ref();
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or_else(|| io_err(path, format!("shape {shape:?} is too large")))?;
        let name = path
            .file_name()
            .ok_or_else(|| io_err(path, "not a file name"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(|e| os_err(path, e))?;
        // From here on, dropping `w` removes the temporary file.
        let mut w = F32Writer {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::new(file)),
            numel,
            written: 0,
        };
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let out = w.out.as_mut().expect("open");
        npyz::WriteOptions::new_header_only()
            .dtype(npyz::DType::Plain(
                "<f4".parse().expect("valid type string"),
            ))
            .shape(&dims)
            .writer(out)
            .write_header_only()
            .map_err(|e| io_err(path, e))?;
        Ok(w)
    }

    /// Appends elements (C order).
    pub fn write(&mut self, data: &[f32]) -> Result<()> {
        if data.len() > self.numel - self.written {
            return Err(io_err(
                &self.path,
                format!(
                    "{} more elements given, the shape has room for {}",
                    data.len(),
                    self.numel - self.written
                ),
            ));
        }
        let out = self.out.as_mut().expect("open until finish");
        for x in data {
            out.write_all(&x.to_le_bytes())
                .map_err(|e| os_err(&self.path, e))?;
        }
        self.written += data.len();
        Ok(())
    }

    /// Checks that every element was written, flushes the file to disk and
    /// renames it to the destination.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.numel {
            return Err(io_err(
                &self.path,
                format!(
                    "{} elements written, the shape needs {}",
                    self.written, self.numel
                ),
            ));
        }
        let out = self.out.take().expect("open until finish");
        let file = out
            .into_inner()
            .map_err(|e| os_err(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| os_err(&self.path, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| os_err(&self.path, e))?;
        Ok(())
    }
}

impl Drop for F32Writer {
    fn drop(&mut self) {
        // Unfinished, or the rename failed: the destination is untouched and
        // the temporary file goes.
        self.out.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes a float32 array of the given shape (through [`F32Writer`]: the
/// destination is replaced whole, or not at all).
pub fn write_f32(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    let path = path.as_ref();
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(data.len()) {
        return Err(io_err(
            path,
            format!(
                "{} elements given for shape {shape:?} ({} elements)",
                data.len(),
                numel.map_or("too many".to_string(), |n| n.to_string())
            ),
        ));
    }
    let mut w = F32Writer::create(path, shape)?;
    w.write(data)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qfuse-npy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn round_trip_and_pieces() {
        let d = dir("rt");
        let p = d.join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
        write_f32(&p, &data, &[2, 3, 4]).unwrap();
        assert_eq!(listing(&d), ["a.npy"]);
        let (got, shape) = read_f32(&p).unwrap();
        assert_eq!((got, shape), (data.clone(), vec![2, 3, 4]));
        let mut r = F32Reader::open(&p).unwrap();
        assert_eq!(r.read(12).unwrap(), data[..12]);
        assert_eq!(r.read(12).unwrap(), data[12..]);
        assert_eq!(r.remaining(), 0);
        assert!(err(r.read(1)).contains("asked for 1 more elements, 0 remain"));
    }

    #[test]
    fn trailing_bytes_and_truncation_are_errors_naming_the_file() {
        let d = dir("trail");
        let p = d.join("x.npy");
        write_f32(&p, &[1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let good = std::fs::read(&p).unwrap();
        let mut bytes = good.clone();
        bytes.extend_from_slice(b"garbage");
        std::fs::write(&p, &bytes).unwrap();
        let e = err(read_f32(&p));
        assert!(
            e.contains("x.npy") && e.contains("7 bytes of trailing data after the [2, 2] array"),
            "{e}"
        );
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let e = err(read_f32(&p));
        assert!(
            e.contains("x.npy") && e.contains("truncated") && e.contains("needs 16 bytes"),
            "{e}"
        );
    }

    #[test]
    fn non_finite_values_are_errors_naming_the_element() {
        let d = dir("nan");
        let p = d.join("x.npy");
        for (bad, name) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let mut data = vec![0.5f32; 2 * 3 * 4];
            data[17] = bad;
            write_f32(&p, &data, &[2, 3, 4]).unwrap();
            let e = err(read_f32(&p));
            assert!(
                e.contains("x.npy")
                    && e.contains(&format!("element 17 (index [1, 1, 1]) is {name}"))
                    && e.contains("finite"),
                "{e}"
            );
            // Read in pieces, the index is still the element's in the file.
            let mut r = F32Reader::open(&p).unwrap();
            r.read(12).unwrap();
            assert!(err(r.read(12)).contains("element 17 (index [1, 1, 1])"));
        }
        // The largest finite values are fine.
        write_f32(&p, &[f32::MAX, -f32::MAX, 3.4e38, 0.0], &[4]).unwrap();
        assert_eq!(read_f32(&p).unwrap().0[2], 3.4e38);
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let d = dir("fail");
        let p = d.join("y.npy");
        // Wrong element count: nothing is created.
        assert!(err(write_f32(&p, &[1.0; 5], &[2, 3])).contains("5 elements given"));
        assert!(listing(&d).is_empty());
        // A writer given too few elements: finish fails, no file left.
        let mut w = F32Writer::create(&p, &[2, 3]).unwrap();
        w.write(&[1.0; 4]).unwrap();
        assert!(listing(&d)[0].ends_with(".tmp"), "{:?}", listing(&d));
        assert!(err(w.finish()).contains("4 elements written, the shape needs 6"));
        assert!(listing(&d).is_empty(), "{:?}", listing(&d));
        // A writer dropped midway (an error elsewhere): no file left.
        let mut w = F32Writer::create(&p, &[2, 3]).unwrap();
        w.write(&[1.0; 3]).unwrap();
        drop(w);
        assert!(listing(&d).is_empty(), "{:?}", listing(&d));
        // An existing destination stays as it was until a write completes.
        write_f32(&p, &[7.0; 2], &[2]).unwrap();
        let mut w = F32Writer::create(&p, &[3]).unwrap();
        w.write(&[1.0]).unwrap();
        assert_eq!(read_f32(&p).unwrap().0, [7.0, 7.0]);
        drop(w);
        assert_eq!(read_f32(&p).unwrap().0, [7.0, 7.0]);
        assert_eq!(listing(&d), ["y.npy"]);
        // The rename fails (the destination is a folder): the error names it,
        // and the temporary file goes.
        let sub = d.join("sub.npy");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep"), b"x").unwrap();
        let e = err(write_f32(&sub, &[1.0], &[1]));
        assert!(e.contains("sub.npy"), "{e}");
        assert_eq!(listing(&d), ["sub.npy", "y.npy"]);
    }

    #[test]
    fn unravel_is_c_order() {
        assert_eq!(unravel(0, &[2, 3, 4]), [0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), [1, 2, 3]);
        assert_eq!(unravel(5, &[6]), [5]);
    }
}
