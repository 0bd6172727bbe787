//! Tensors of an ONNX file: element types, decoding of `TensorProto` (raw bytes,
//! typed fields, external data), bounds-checked.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::proto::TensorProto;
use super::{bad, unsupported};
use crate::error::Result;

/// The element types qfuse reads from ONNX files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// `FLOAT` (1)
    F32,
    /// `UINT8` (2)
    U8,
    /// `INT8` (3)
    I8,
    /// `INT32` (6)
    I32,
    /// `INT64` (7)
    I64,
}

impl ElemType {
    /// The type of ONNX's `TensorProto.DataType` code, or an error naming it.
    pub fn from_onnx(code: i32, at: &str) -> Result<ElemType> {
        match code {
            1 => Ok(ElemType::F32),
            2 => Ok(ElemType::U8),
            3 => Ok(ElemType::I8),
            6 => Ok(ElemType::I32),
            7 => Ok(ElemType::I64),
            0 => Err(bad(at, "data type UNDEFINED (0)")),
            c => Err(unsupported(
                at,
                format!(
                    "data type {} ({c}); qfuse reads float, uint8, int8, int32 and int64 tensors",
                    onnx_type_name(c)
                ),
            )),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElemType::U8 | ElemType::I8 => 1,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I64 => 8,
        }
    }

    /// ONNX's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "float",
            ElemType::U8 => "uint8",
            ElemType::I8 => "int8",
            ElemType::I32 => "int32",
            ElemType::I64 => "int64",
        }
    }
}

/// ONNX's name of a `TensorProto.DataType` code.
pub(crate) fn onnx_type_name(code: i32) -> &'static str {
    const NAMES: [&str; 27] = [
        "UNDEFINED",
        "FLOAT",
        "UINT8",
        "INT8",
        "UINT16",
        "INT16",
        "INT32",
        "INT64",
        "STRING",
        "BOOL",
        "FLOAT16",
        "DOUBLE",
        "UINT32",
        "UINT64",
        "COMPLEX64",
        "COMPLEX128",
        "BFLOAT16",
        "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ",
        "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ",
        "UINT4",
        "INT4",
        "FLOAT4E2M1",
        "FLOAT8E8M0",
        "UINT2",
        "INT2",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("unknown")
}

/// The values of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// float
    F32(Vec<f32>),
    /// uint8
    U8(Vec<u8>),
    /// int8
    I8(Vec<i8>),
    /// int32
    I32(Vec<i32>),
    /// int64
    I64(Vec<i64>),
}

impl TensorData {
    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            TensorData::F32(_) => ElemType::F32,
            TensorData::U8(_) => ElemType::U8,
            TensorData::I8(_) => ElemType::I8,
            TensorData::I32(_) => ElemType::I32,
            TensorData::I64(_) => ElemType::I64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of an integer tensor as i64 (None for float).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            TensorData::F32(_) => return None,
            TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I64(v) => v.clone(),
        })
    }
}

/// A constant tensor (an initializer or a `Constant` node's value).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// The values, row-major; `data.len()` is the product of `dims`.
    pub data: TensorData,
}

impl Tensor {
    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        self.data.elem_type()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every element's bits, widened to u64 (floats by `to_bits`, signed
    /// integers two's complement in their own width): for comparing tensors
    /// bit for bit across element types.
    pub fn bits(&self) -> Vec<u64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as u64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8 as u64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as u32 as u64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
        }
    }

    /// The f32 values, or None if the tensor is not float.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The i32 values, or None if the tensor is not int32.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }
}

/// Product of dims with overflow checks; `at` names the tensor for the error.
pub(crate) fn checked_count(dims: &[usize], at: &str) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| bad(at, format!("dims {dims:?}: element count overflows")))
    })
}

/// Decode one `TensorProto`. `at` names it in errors; `dir` is the model's
/// folder (for external data), None when the model came from bytes.
pub(crate) fn decode_tensor(t: &TensorProto, at: &str, dir: Option<&Path>) -> Result<Tensor> {
    let elem = ElemType::from_onnx(t.data_type.unwrap_or(0), at)?;
    if t.segment.is_some() {
        return Err(unsupported(at, "segmented tensor"));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = usize::try_from(d)
            .map_err(|_| bad(at, format!("negative dimension {d} in dims {:?}", t.dims)))?;
        dims.push(d);
    }
    let count = checked_count(&dims, at)?;
    // DataLocation: DEFAULT = 0, EXTERNAL = 1
    let external = t.data_location.unwrap_or(0) == 1;
    if external {
        let bytes = read_external(t, at, dir, count, elem)?;
        return Ok(Tensor {
            dims,
            data: from_le_bytes(&bytes, elem),
        });
    }
    if let Some(raw) = &t.raw_data {
        let want = count
            .checked_mul(elem.size())
            .ok_or_else(|| bad(at, "byte size overflows"))?;
        if raw.len() != want {
            return Err(bad(
                at,
                format!(
                    "raw_data holds {} bytes but dims {dims:?} of {} need {want}",
                    raw.len(),
                    elem.name()
                ),
            ));
        }
        return Ok(Tensor {
            dims,
            data: from_le_bytes(raw, elem),
        });
    }
    let (n, data) = match elem {
        ElemType::F32 => (t.float_data.len(), TensorData::F32(t.float_data.clone())),
        ElemType::I32 => (t.int32_data.len(), TensorData::I32(t.int32_data.clone())),
        ElemType::I64 => (t.int64_data.len(), TensorData::I64(t.int64_data.clone())),
        ElemType::U8 => {
            let v = narrow(&t.int32_data, at, |x| u8::try_from(x).ok())?;
            (v.len(), TensorData::U8(v))
        }
        ElemType::I8 => {
            let v = narrow(&t.int32_data, at, |x| i8::try_from(x).ok())?;
            (v.len(), TensorData::I8(v))
        }
    };
    if n != count {
        return Err(bad(
            at,
            format!(
                "holds {n} {} values but dims {dims:?} need {count}",
                elem.name()
            ),
        ));
    }
    Ok(Tensor { dims, data })
}

fn narrow<T>(v: &[i32], at: &str, f: impl Fn(i32) -> Option<T>) -> Result<Vec<T>> {
    v.iter()
        .map(|&x| f(x).ok_or_else(|| bad(at, format!("value {x} out of range of its type"))))
        .collect()
}

fn from_le_bytes(b: &[u8], elem: ElemType) -> TensorData {
    match elem {
        ElemType::U8 => TensorData::U8(b.to_vec()),
        ElemType::I8 => TensorData::I8(b.iter().map(|&x| x as i8).collect()),
        ElemType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        ElemType::I32 => TensorData::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        ElemType::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    }
}

/// Read an external-data tensor: `location` relative to the model's folder
/// (no absolute path, no `..`), `offset` and `length` within the file, and the
/// length equal to what the dims need.
fn read_external(
    t: &TensorProto,
    at: &str,
    dir: Option<&Path>,
    count: usize,
    elem: ElemType,
) -> Result<Vec<u8>> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for kv in &t.external_data {
        let key = kv.key.as_deref().unwrap_or("");
        let value = kv.value.as_deref().unwrap_or("");
        let num = |what: &str| {
            value.parse::<u64>().map_err(|_| {
                bad(
                    at,
                    format!("external data {what} {value:?} is not a non-negative integer"),
                )
            })
        };
        match key {
            "location" => location = Some(value.to_string()),
            "offset" => offset = num("offset")?,
            "length" => length = Some(num("length")?),
            _ => {} // checksum, basepath: not needed
        }
    }
    let location = location.ok_or_else(|| bad(at, "external data without a location"))?;
    let dir = dir.ok_or_else(|| {
        unsupported(
            at,
            format!(
                "data is in the external file {location:?}; load the model from its path \
                 (OnnxGraph::load) so that the file can be found next to it"
            ),
        )
    })?;
    let rel = Path::new(&location);
    if location.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(
            at,
            format!(
                "external data location {location:?} must be a relative path inside the \
                 model's folder"
            ),
        ));
    }
    let path = dir.join(rel);
    let io = |source| crate::Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = File::open(&path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let want = (count as u64)
        .checked_mul(elem.size() as u64)
        .ok_or_else(|| bad(at, "byte size overflows"))?;
    let length = length.unwrap_or(want);
    if length != want {
        return Err(bad(
            at,
            format!("external data length {length} but dims need {want} bytes"),
        ));
    }
    let end = offset
        .checked_add(length)
        .ok_or_else(|| bad(at, "external data offset + length overflows"))?;
    if end > file_len {
        return Err(bad(
            at,
            format!(
                "external data [{offset}, {end}) lies past the end of {location:?} ({file_len} bytes)"
            ),
        ));
    }
    let len = usize::try_from(length).map_err(|_| bad(at, "external data too large"))?;
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
