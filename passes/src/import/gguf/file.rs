//! The GGUF container: header, metadata, tensor infos and the data section, read through a
//! bounds-checked `Cursor`; each tensor's type, size, alignment and bounds are checked before its
//! bytes are sliced out.

use super::dequant::Kind;
use super::metadata::{Metadata, Value};
use std::collections::{BTreeMap, HashSet};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; this bounds the recursion on a hostile file.
const MAX_ARRAY_NESTING: usize = 8;
/// Smallest possible tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;

/// A parsed file: metadata plus checked views of the tensors' bytes.
pub(super) struct GgufFile<'a> {
    pub(super) version: u32,
    pub(super) metadata: Metadata,
    pub(super) tensors: Vec<TensorEntry<'a>>,
}

/// One tensor whose type is supported and whose bytes lie inside the file.
pub(super) struct TensorEntry<'a> {
    pub(super) name: String,
    /// GGUF order: fastest-varying first (`dims[0]` is the row length).
    pub(super) dims: Vec<usize>,
    pub(super) kind: Kind,
    pub(super) bytes: &'a [u8],
}

impl TensorEntry<'_> {
    pub(super) fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Hugging Face (row-major) shape: the GGUF dims reversed.
    pub(super) fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A tensor info as the file states it, before any check.
struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    offset: u64,
}

pub(super) fn parse(bytes: &[u8]) -> Result<GgufFile<'_>, String> {
    let mut cur = Cursor::new(bytes);
    let version = read_header(&mut cur)?;
    let tensor_count = cur.u64("the tensor count")?;
    let kv_count = cur.u64("the metadata count")?;
    let metadata = read_metadata(&mut cur, kv_count)?;
    let infos = read_tensor_infos(&mut cur, tensor_count)?;
    let alignment = metadata.alignment()?;
    let data_start = align_up(cur.pos as u64, alignment);
    let tensors = check_tensors(bytes, infos, data_start, alignment)?;
    Ok(GgufFile {
        version,
        metadata,
        tensors,
    })
}

fn read_header(cur: &mut Cursor) -> Result<u32, String> {
    if cur.bytes.len() < 8 {
        return Err(format!(
            "not a GGUF file: it is only {} bytes long (a GGUF header is at least 24)",
            cur.bytes.len()
        ));
    }
    let magic = cur.take(4, "the magic number")?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file: it starts with bytes {magic:02x?}, expected \"GGUF\" (47 47 55 46)"
        ));
    }
    match cur.u32("the format version")? {
        v @ (2 | 3) => Ok(v),
        1 => Err(
            "GGUF version 1 is not supported (paretoqc reads versions 2 and 3); \
                  convert the model again with a current llama.cpp"
                .into(),
        ),
        v if v.swap_bytes() <= 3 => Err("big-endian GGUF files are not supported".into()),
        v => Err(format!(
            "unsupported GGUF version {v}: paretoqc reads versions 2 and 3"
        )),
    }
}

fn read_metadata(cur: &mut Cursor, count: u64) -> Result<Metadata, String> {
    let mut map = BTreeMap::new();
    for i in 0..count {
        let key = cur.string(&format!("metadata key {i} of {count}"))?;
        let what = format!("metadata `{key}`");
        let value_type = cur.u32(&what)?;
        let value = read_value(cur, value_type, &what, 0)?;
        if map.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
    }
    Ok(Metadata(map))
}

fn read_value(
    cur: &mut Cursor,
    value_type: u32,
    what: &str,
    depth: usize,
) -> Result<Value, String> {
    Ok(match value_type {
        0 => Value::U8(cur.u8(what)?),
        1 => Value::I8(cur.u8(what)? as i8),
        2 => Value::U16(u16::from_le_bytes(cur.array(what)?)),
        3 => Value::I16(i16::from_le_bytes(cur.array(what)?)),
        4 => Value::U32(cur.u32(what)?),
        5 => Value::I32(i32::from_le_bytes(cur.array(what)?)),
        6 => Value::F32(f32::from_le_bytes(cur.array(what)?)),
        7 => Value::Bool(cur.u8(what)? != 0),
        8 => Value::Str(cur.string(what)?),
        9 => read_array(cur, what, depth)?,
        10 => Value::U64(cur.u64(what)?),
        11 => Value::I64(i64::from_le_bytes(cur.array(what)?)),
        12 => Value::F64(f64::from_le_bytes(cur.array(what)?)),
        t => return Err(format!("{what} has unknown value type {t}")),
    })
}

fn read_array(cur: &mut Cursor, what: &str, depth: usize) -> Result<Value, String> {
    if depth >= MAX_ARRAY_NESTING {
        return Err(format!(
            "{what}: arrays nested more than {MAX_ARRAY_NESTING} deep"
        ));
    }
    let element_type = cur.u32(what)?;
    let count = cur.u64(what)?;
    // Every element takes at least one byte: a larger count means a truncated or corrupt file,
    // and checking first keeps us from allocating for it.
    if count > cur.remaining() as u64 {
        return Err(format!(
            "file is truncated: {what} claims {count} elements but only {} bytes remain",
            cur.remaining()
        ));
    }
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        items.push(read_value(cur, element_type, what, depth + 1)?);
    }
    Ok(Value::Array(items))
}

fn read_tensor_infos(cur: &mut Cursor, count: u64) -> Result<Vec<RawTensorInfo>, String> {
    if count > cur.remaining() as u64 / MIN_TENSOR_INFO_BYTES {
        return Err(format!(
            "file is truncated: the header lists {count} tensors but only {} bytes remain for \
             their descriptions",
            cur.remaining()
        ));
    }
    (0..count).map(|i| read_tensor_info(cur, i)).collect()
}

fn read_tensor_info(cur: &mut Cursor, index: u64) -> Result<RawTensorInfo, String> {
    let name = cur.string(&format!("the name of tensor {index}"))?;
    let what = format!("the description of tensor `{name}`");
    let n_dims = cur.u32(&what)?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(format!(
            "tensor `{name}` has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}"
        ));
    }
    let dims = (0..n_dims)
        .map(|_| cur.u64(&what))
        .collect::<Result<Vec<_>, _>>()?;
    let ggml_type = cur.u32(&what)?;
    let offset = cur.u64(&what)?;
    Ok(RawTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// Checks names, types, sizes, alignment and bounds, and slices out each tensor's bytes.
fn check_tensors(
    bytes: &[u8],
    infos: Vec<RawTensorInfo>,
    data_start: u64,
    alignment: u64,
) -> Result<Vec<TensorEntry<'_>>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        if !seen.insert(info.name.clone()) {
            return Err(format!("tensor `{}` appears twice", info.name));
        }
        out.push(check_tensor(bytes, info, data_start, alignment)?);
    }
    Ok(out)
}

fn check_tensor(
    bytes: &[u8],
    info: RawTensorInfo,
    data_start: u64,
    alignment: u64,
) -> Result<TensorEntry<'_>, String> {
    let name = &info.name;
    let kind = Kind::from_ggml(info.ggml_type).map_err(|m| format!("tensor `{name}` {m}"))?;
    let (dims, nbytes) = tensor_size(name, &info.dims, kind)?;
    if !info.offset.is_multiple_of(alignment) {
        return Err(format!(
            "tensor `{name}` starts at data offset {}, which is not a multiple of the \
             alignment {alignment}",
            info.offset
        ));
    }
    let start = data_start.checked_add(info.offset);
    let end = start.and_then(|s| s.checked_add(nbytes as u64));
    match (start, end) {
        (Some(s), Some(e)) if e <= bytes.len() as u64 => Ok(TensorEntry {
            name: info.name.clone(),
            dims,
            kind,
            bytes: &bytes[s as usize..e as usize],
        }),
        _ => Err(format!(
            "file is truncated: the data of tensor `{name}` ({nbytes} bytes at offset {} of the \
             data section, which starts at byte {data_start}) runs past the end of the file \
             ({} bytes)",
            info.offset,
            bytes.len()
        )),
    }
}

/// The dims as `usize` and the tensor's size in bytes, checked for overflow and whole blocks.
fn tensor_size(name: &str, dims: &[u64], kind: Kind) -> Result<(Vec<usize>, usize), String> {
    let too_big = || format!("tensor `{name}` has impossible dimensions {dims:?}");
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_big()))
        .collect::<Result<_, _>>()?;
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let (block, block_bytes) = kind.block();
    if !dims[0].is_multiple_of(block) {
        return Err(format!(
            "tensor `{name}` has rows of {} elements, not a whole number of {block}-element {} \
             blocks",
            dims[0],
            kind.name()
        ));
    }
    let nbytes = (numel / block)
        .checked_mul(block_bytes)
        .ok_or_else(too_big)?;
    Ok((dims, nbytes))
}

fn align_up(pos: u64, alignment: u64) -> u64 {
    pos.div_ceil(alignment).saturating_mul(alignment)
}

impl Metadata {
    /// `general.alignment`, 32 when absent; must be a power of two.
    fn alignment(&self) -> Result<u64, String> {
        let key = "general.alignment";
        match self.opt_usize(key)?.map(|a| a as u64) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(a) if a.is_power_of_two() => Ok(a),
            Some(a) => Err(format!("metadata `{key}` is {a}, not a power of two")),
        }
    }
}

/// Bounds-checked little-endian reads over the mapped file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "file is truncated: {what} at byte {} needs {n} bytes but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u64(what)?;
        let at = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| format!("{what} (string at byte {at}) is not valid UTF-8"))
    }
}
