//! A reader of GGUF files (llama.cpp's model format): header, metadata,
//! tensor infos, and tensors dequantised to `f32`.
//!
//! Our own rather than a crate: the GGUF readers on crates.io either come
//! inside a whole tensor library (candle-core, a second one beside burn for
//! a 400-line job) or parse without dequantising and without bounds on the
//! counts a file claims. This one checks every count against the bytes the
//! file has before allocating, names the metadata key or tensor in every
//! error, and dequantises the types the issue needs (F32, F16, BF16, Q8_0,
//! Q4_0, Q4_1) exactly as ggml does (the tests pin each block layout).
//!
//! Tensor dimensions are stored fastest-first (`[in, out]` for a linear
//! weight); [`GgufTensorInfo::shape`] gives them in row-major order
//! (`[out, in]`, PyTorch's), which is the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{ModelError, Result};

/// `GGUF` as a little-endian u32.
const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string` (UTF-8).
    String(String),
    /// `array` of one element type.
    Array(Vec<GgufValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer
    /// of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, when it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::F32(_) => "float32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F64(_) => "float64",
        }
    }
}

/// A ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: f16 scale `d`, 32 × i8; `x = d·q`.
    Q8_0,
    /// Blocks of 32: f16 scale `d`, 32 × 4 bits; `x = d·(q − 8)`.
    Q4_0,
    /// Blocks of 32: f16 scale `d`, f16 minimum `m`, 32 × 4 bits; `x = d·q + m`.
    Q4_1,
    /// Any other type id (K-quants, I-quants, …): listed, not readable.
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// `(values per block, bytes per block)`, for the readable types.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
        }
    }

    /// ggml's name of the type.
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Other(id) => format!(
                "{} (ggml type {id})",
                match id {
                    6 => "Q5_0",
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    12 => "Q4_K",
                    13 => "Q5_K",
                    14 => "Q6_K",
                    15 => "Q8_K",
                    _ => "unknown",
                }
            ),
        }
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions fastest-first, as the file stores them (`[in, out]`).
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Row-major shape (`[out, in]` for a linear weight).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed GGUF file, its bytes kept for reading tensors.
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "{}: needs {n} bytes at offset {}, the file ends at {}",
                what(),
                self.pos,
                self.bytes.len()
            )),
        }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// A count that must fit in the rest of the file at `min_size` bytes
    /// per item: a corrupt count fails here instead of allocating.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> std::result::Result<usize, String> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
            .is_some_and(|b| b <= self.left());
        if !fits {
            return Err(format!(
                "{}: claims {n} items, more than the {} bytes left in the file hold",
                what(),
                self.left()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> std::result::Result<String, String> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{}: not valid UTF-8", what()))
    }

    fn value(
        &mut self,
        type_id: u32,
        what: &dyn Fn() -> String,
        depth: u32,
    ) -> std::result::Result<GgufValue, String> {
        Ok(match type_id {
            0 => GgufValue::U8(self.take(1, what)?[0]),
            1 => GgufValue::I8(self.take(1, what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap())),
            3 => GgufValue::I16(i16::from_le_bytes(self.take(2, what)?.try_into().unwrap())),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(self.u32(what)? as i32),
            6 => GgufValue::F32(f32::from_le_bytes(self.take(4, what)?.try_into().unwrap())),
            7 => match self.take(1, what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{}: bool byte is {b}, expected 0 or 1", what())),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(format!("{}: arrays of arrays are not supported", what()));
                }
                let element = self.u32(what)?;
                let min_size = match element {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    other => return Err(format!("{}: unknown array element type {other}", what())),
                };
                let n = self.count(min_size, what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(element, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_le_bytes(self.take(8, what)?.try_into().unwrap())),
            other => return Err(format!("{}: unknown value type {other}", what())),
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(bytes, path)
    }

    /// Parses GGUF bytes; `path` names the file in errors.
    pub fn parse(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let fail = |reason: String| ModelError::Gguf {
            path: path.clone(),
            reason,
        };
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        let magic = c.take(4, &|| "header".into()).map_err(fail)?;
        if magic != MAGIC {
            return Err(fail(format!(
                "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = c.u32(&|| "header version".into()).map_err(fail)?;
        if !(2..=3).contains(&version) {
            return Err(fail(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, a
        // metadata pair at least 8 + 4 + 1.
        let n_tensors = c.count(24, &|| "header tensor_count".into()).map_err(fail)?;
        let n_kv = c.count(13, &|| "header metadata_kv_count".into()).map_err(fail)?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata pair {i}: key")).map_err(fail)?;
            let what = || format!("metadata `{key}`");
            let type_id = c.u32(&what).map_err(fail)?;
            let value = c.value(type_id, &what, 0).map_err(fail)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(fail(format!("metadata `{key}` appears twice")));
            }
        }
        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor info {i}: name")).map_err(fail)?;
            let what = || format!("tensor `{name}`");
            let n_dims = c.u32(&what).map_err(fail)?;
            if !(1..=4).contains(&n_dims) {
                return Err(fail(format!(
                    "tensor `{name}` has {n_dims} dimensions, expected 1 to 4"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what).map_err(fail)?);
            }
            let dtype = GgmlType::from_id(c.u32(&what).map_err(fail)?);
            let offset = c.u64(&what).map_err(fail)?;
            if tensors.iter().any(|t| t.name == name) {
                return Err(fail(format!("tensor `{name}` appears twice")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                dtype,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(fail(format!(
                        "metadata `general.alignment` is {v:?}, expected a power of two"
                    )));
                }
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file = Self {
            path: path.clone(),
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes: Vec::new(),
        };
        // Every readable tensor's bytes must lie inside the file.
        for t in &file.tensors {
            if let Some(range) = file.range(t, bytes.len()).map_err(fail)? {
                debug_assert!(range.end <= bytes.len());
            }
        }
        Ok(Self { bytes, ..file })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte range of a readable tensor's data; `None` for an unreadable
    /// type (which fails only when read).
    fn range(
        &self,
        t: &GgufTensorInfo,
        file_len: usize,
    ) -> std::result::Result<Option<std::ops::Range<usize>>, String> {
        let Some((per_block, block_bytes)) = t.dtype.block() else {
            return Ok(None);
        };
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{}`: dimensions {:?} overflow", t.name, t.dims))?;
        if !t.dims[0].is_multiple_of(per_block as u64) {
            return Err(format!(
                "tensor `{}`: {} rows of {} values, not whole {}-value blocks of {}",
                t.name,
                n / t.dims[0].max(1),
                t.dims[0],
                per_block,
                t.dtype.name()
            ));
        }
        let size = (n / per_block as u64).checked_mul(block_bytes as u64);
        let start = (self.data_start as u64).checked_add(t.offset);
        match (start, size) {
            (Some(start), Some(size)) if start.checked_add(size).is_some_and(|e| e <= file_len as u64) => {
                Ok(Some(start as usize..(start + size) as usize))
            }
            _ => Err(format!(
                "tensor `{}` ({} {:?}) at data offset {} runs past the end of the file ({} bytes)",
                t.name,
                t.dtype.name(),
                t.shape(),
                t.offset,
                file_len
            )),
        }
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn wrong(&self, key: &str, value: &GgufValue, expected: &str) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            reason: format!("metadata `{key}` is a {}, expected {expected}", value.type_name()),
        }
    }

    fn missing(&self, key: &str) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            reason: format!("metadata `{key}` is missing"),
        }
    }

    /// A required non-negative integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, v, "a non-negative integer"))
    }

    /// An optional non-negative integer (an error when present but not one).
    pub fn optional_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong(key, v, "a non-negative integer"))
            })
            .transpose()
    }

    /// An optional number.
    pub fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(key, v, "a number")))
            .transpose()
    }

    /// An optional boolean.
    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.wrong(key, v, "a bool")))
            .transpose()
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str().ok_or_else(|| self.wrong(key, v, "a string"))
    }

    /// An optional string.
    pub fn optional_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, v, "a string")))
            .transpose()
    }

    /// A required array of strings.
    pub fn require_strings(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_array()
            .and_then(|items| items.iter().map(GgufValue::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.wrong(key, v, "an array of strings"))
    }

    /// A tensor's info.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values as `f32` (dequantised), row-major, with its
    /// row-major shape. Fails naming the tensor when it is absent, of a
    /// type this reader cannot dequantise, or holds a non-finite value.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let fail = |reason: String| ModelError::Gguf {
            path: self.path.clone(),
            reason,
        };
        let t = self
            .tensor_info(name)
            .ok_or_else(|| fail(format!("tensor `{name}` is missing")))?;
        let range = self.range(t, self.bytes.len()).map_err(fail)?.ok_or_else(|| {
            fail(format!(
                "tensor `{name}` is {}, which this reader cannot dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                t.dtype.name()
            ))
        })?;
        let values = dequantize(t.dtype, &self.bytes[range]);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!(
                "tensor `{name}` holds a non-finite value at flat index {i}"
            )));
        }
        Ok((values, t.shape()))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `data` (whole blocks of `dtype`) as ggml does.
pub fn dequantize(dtype: GgmlType, data: &[u8]) -> Vec<f32> {
    match dtype {
        GgmlType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => data.chunks_exact(2).map(|c| f16_at(c, 0)).collect(),
        GgmlType::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => data
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16_at(b, 0);
                b[2..].iter().map(move |&q| d * (q as i8) as f32)
            })
            .collect(),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (block, header) = if dtype == GgmlType::Q4_0 { (18, 2) } else { (20, 4) };
            let mut out = Vec::with_capacity(data.len() / block * 32);
            for b in data.chunks_exact(block) {
                let d = f16_at(b, 0);
                let (m, offset) = if dtype == GgmlType::Q4_0 {
                    (0.0, 8.0)
                } else {
                    (f16_at(b, 2), 0.0)
                };
                let qs = &b[header..];
                // Low nibbles are values 0..16, high nibbles 16..32.
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as f32 - offset) * d + m));
                out.extend(qs.iter().map(|&q| ((q >> 4) as f32 - offset) * d + m));
            }
            out
        }
        GgmlType::Other(_) => Vec::new(),
    }
}

/// A GGUF file writer for tests and fixtures: metadata and F32/F16/Q8_0/
/// Q4_0/Q4_1 tensors given as raw bytes, laid out as llama.cpp does.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata pair.
    pub fn meta(mut self, key: &str, value: GgufValue) -> Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor: `dims` fastest-first, `type_id` the ggml type id,
    /// `data` its bytes.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), type_id, data));
        self
    }

    /// Adds an F32 tensor from row-major `values` of row-major `shape`.
    pub fn f32_tensor(self, name: &str, shape: &[usize], values: &[f32]) -> Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, &dims, 0, data)
    }

    /// The file's bytes (version 3, 32-byte alignment).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn type_id(v: &GgufValue) -> u32 {
            match v {
                GgufValue::U8(_) => 0,
                GgufValue::I8(_) => 1,
                GgufValue::U16(_) => 2,
                GgufValue::I16(_) => 3,
                GgufValue::U32(_) => 4,
                GgufValue::I32(_) => 5,
                GgufValue::F32(_) => 6,
                GgufValue::Bool(_) => 7,
                GgufValue::String(_) => 8,
                GgufValue::Array(_) => 9,
                GgufValue::U64(_) => 10,
                GgufValue::I64(_) => 11,
                GgufValue::F64(_) => 12,
            }
        }
        fn value(out: &mut Vec<u8>, v: &GgufValue) {
            match v {
                GgufValue::U8(x) => out.push(*x),
                GgufValue::I8(x) => out.push(*x as u8),
                GgufValue::U16(x) => out.extend(x.to_le_bytes()),
                GgufValue::I16(x) => out.extend(x.to_le_bytes()),
                GgufValue::U32(x) => out.extend(x.to_le_bytes()),
                GgufValue::I32(x) => out.extend(x.to_le_bytes()),
                GgufValue::F32(x) => out.extend(x.to_le_bytes()),
                GgufValue::Bool(x) => out.push(*x as u8),
                GgufValue::String(s) => string(out, s),
                GgufValue::Array(items) => {
                    out.extend(items.first().map_or(4, type_id).to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for item in items {
                        value(out, item);
                    }
                }
                GgufValue::U64(x) => out.extend(x.to_le_bytes()),
                GgufValue::I64(x) => out.extend(x.to_le_bytes()),
                GgufValue::F64(x) => out.extend(x.to_le_bytes()),
            }
        }
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            string(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let start = (out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        out.resize(start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((start + off) as usize, 0);
            out.extend(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_block_layout_low_nibbles_first() {
        // d = 0.5, m = -1: value j = 0.5·q_j − 1, with q_j for j < 16 in
        // the low nibble of byte j and q_{j+16} in its high nibble.
        let mut block = Vec::new();
        block.extend(f16(0.5));
        block.extend(f16(-1.0));
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_1, &block);
        assert_eq!(v.len(), 32);
        for j in 0..16 {
            assert_eq!(v[j], 0.5 * j as f32 - 1.0, "low nibble {j}");
            assert_eq!(v[16 + j], 0.5 * (15 - j) as f32 - 1.0, "high nibble {j}");
        }
    }

    #[test]
    fn q4_0_and_q8_0_blocks() {
        let mut b = Vec::new();
        b.extend(f16(2.0));
        b.extend([0x80u8; 16]); // low nibble 0 → −8, high nibble 8 → 0
        let v = dequantize(GgmlType::Q4_0, &b);
        assert_eq!(&v[..16], &[-16.0; 16]);
        assert_eq!(&v[16..], &[0.0; 16]);

        let mut b = Vec::new();
        b.extend(f16(0.25));
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(GgmlType::Q8_0, &b);
        assert_eq!(v, (0..32).map(|i| 0.25 * (i - 16) as f32).collect::<Vec<_>>());
    }

    fn sample() -> GgufWriter {
        GgufWriter::new()
            .meta("general.architecture", GgufValue::String("llama".into()))
            .meta("llama.block_count", GgufValue::U32(2))
            .meta(
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("b".into())]),
            )
            .f32_tensor("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .f32_tensor("n", &[3], &[7.0, 8.0, 9.0])
    }

    #[test]
    fn round_trip_of_metadata_and_tensors() {
        let g = GgufFile::parse(sample().to_bytes(), "s.gguf").unwrap();
        assert_eq!(g.require_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.require_u64("llama.block_count").unwrap(), 2);
        assert_eq!(g.require_strings("tokenizer.ggml.tokens").unwrap(), ["a", "b"]);
        let (v, shape) = g.tensor_f32("w").unwrap();
        assert_eq!((v, shape), (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3]));
        assert_eq!(g.tensor_f32("n").unwrap().0, [7.0, 8.0, 9.0]);
    }

    #[test]
    fn errors_name_the_key_or_tensor() {
        let g = GgufFile::parse(sample().to_bytes(), "s.gguf").unwrap();
        let e = g.require_u64("general.architecture").unwrap_err().to_string();
        assert_eq!(
            e,
            "s.gguf: metadata `general.architecture` is a string, expected a non-negative integer"
        );
        let e = g.require_u64("llama.context_length").unwrap_err().to_string();
        assert_eq!(e, "s.gguf: metadata `llama.context_length` is missing");
        let e = g.tensor_f32("nope").unwrap_err().to_string();
        assert_eq!(e, "s.gguf: tensor `nope` is missing");

        let q4k = sample().tensor("k", &[256], 12, vec![0; 144]);
        let g = GgufFile::parse(q4k.to_bytes(), "s.gguf").unwrap();
        let e = g.tensor_f32("k").unwrap_err().to_string();
        assert!(
            e.contains("tensor `k` is Q4_K (ggml type 12), which this reader cannot dequantise"),
            "{e}"
        );

        let nan = sample().f32_tensor("bad", &[2], &[1.0, f32::NAN]);
        let g = GgufFile::parse(nan.to_bytes(), "s.gguf").unwrap();
        let e = g.tensor_f32("bad").unwrap_err().to_string();
        assert!(
            e.ends_with("tensor `bad` holds a non-finite value at flat index 1"),
            "{e}"
        );
    }

    #[test]
    fn malformed_files_fail_with_the_place() {
        let e = GgufFile::parse(b"GGML\x03\0\0\0".to_vec(), "x.gguf")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.gguf: not a GGUF file"), "{e}");

        let bytes = sample().to_bytes();
        // Cut inside the tensor data: the last tensor runs past the end.
        let cut = GgufFile::parse(bytes[..bytes.len() - 4].to_vec(), "x.gguf")
            .unwrap_err()
            .to_string();
        assert!(
            cut.contains("tensor `n` (F32 [3]) at data offset 32 runs past the end"),
            "{cut}"
        );

        // A string length past the end: the key whose value it is is named
        // (header 24 bytes, key 8 + 20, type 4, then the value's length).
        let mut long = bytes.clone();
        long[56..64].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = GgufFile::parse(long, "x.gguf").unwrap_err().to_string();
        assert!(
            e.contains("metadata `general.architecture`: claims 1099511627776 items"),
            "{e}"
        );

        // A corrupt count is refused before anything is allocated.
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::parse(huge, "x.gguf").unwrap_err().to_string();
        assert!(
            e.contains("header tensor_count: claims 18446744073709551615 items"),
            "{e}"
        );

        // A block-quantised tensor whose rows are not whole blocks.
        let odd = sample().tensor("q", &[31], 3, vec![0; 20]);
        let e = GgufFile::parse(odd.to_bytes(), "x.gguf").unwrap_err().to_string();
        assert!(
            e.contains("tensor `q`: 1 rows of 31 values, not whole 32-value blocks of Q4_1"),
            "{e}"
        );
    }
}
