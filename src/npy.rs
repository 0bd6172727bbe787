//! Reading and writing `.npy` arrays (through the `npyz` crate), with errors
//! that name the file and the problem.

use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn open(path: &Path) -> Result<npyz::NpyFile<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    npyz::NpyFile::new(std::io::BufReader::new(f))
        .map_err(|e| io_err(path, format!("not a .npy file ({e})")))
}

fn shape_of<R: std::io::Read>(f: &npyz::NpyFile<R>, path: &Path) -> Result<Vec<usize>> {
    if f.order() != npyz::Order::C {
        return Err(io_err(
            path,
            "Fortran-ordered arrays are not supported (save a C-contiguous array)",
        ));
    }
    Ok(f.shape().iter().map(|&d| d as usize).collect())
}

/// Reads a float32 array; returns the data (C order) and the shape.
pub fn read_f32(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let f = open(path)?;
    let shape = shape_of(&f, path)?;
    let dt = f.dtype();
    let want = npyz::DType::Plain("<f4".parse().expect("valid type string"));
    if dt != want {
        return Err(io_err(
            path,
            format!("dtype is {}, expected float32 (<f4)", dt.descr()),
        ));
    }
    let data = f
        .into_vec::<f32>()
        .map_err(|e| io_err(path, format!("truncated or unreadable data ({e})")))?;
    Ok((data, shape))
}

/// Reads an integer array (int64 or int32), as i64.
pub fn read_i64(path: impl AsRef<Path>) -> Result<(Vec<i64>, Vec<usize>)> {
    let path = path.as_ref();
    let f = open(path)?;
    let shape = shape_of(&f, path)?;
    let d = f.dtype().descr();
    let data = match d.as_str() {
        "'<i8'" => f.into_vec::<i64>(),
        "'<i4'" => f
            .into_vec::<i32>()
            .map(|v| v.into_iter().map(i64::from).collect()),
        _ => {
            return Err(io_err(
                path,
                format!("dtype is {d}, expected int64 or int32"),
            ))
        }
    }
    .map_err(|e| io_err(path, format!("truncated or unreadable data ({e})")))?;
    Ok((data, shape))
}

/// Writes a float32 array of the given shape.
pub fn write_f32(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    let path = path.as_ref();
    let f = std::fs::File::create(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(f))
        .begin_nd()
        .map_err(|e| io_err(path, e))?;
    w.extend(data.iter().copied())
        .map_err(|e| io_err(path, e))?;
    w.finish().map_err(|e| io_err(path, e))
}
