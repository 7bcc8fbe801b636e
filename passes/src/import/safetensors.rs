//! Reads safetensors files: memory-mapped, header checked by the `safetensors` crate (offsets,
//! sizes, overlaps), f32/f16/bf16 widened to f32. Every error names the file.

use super::error::ImportError;
use crate::tensor::Tensor;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::fs::File;
use std::path::Path;

/// Maps a file into memory.
pub fn map_file(path: &Path) -> Result<Mmap, ImportError> {
    let file: File =
        paretoqc_runtime::fsio::open_regular(path, true).map_err(|e| ImportError::io(path, e))?;
    // SAFETY: the map is read-only and lives only while we decode; a file changed under us can
    // give wrong numbers but not unsafety in the safe code that reads the bytes.
    unsafe { Mmap::map(&file) }.map_err(|e| ImportError::io(path, e))
}

/// Every tensor of a safetensors file, in the file's order, as f32.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, ImportError> {
    decode_file(path, &map_file(path)?)
}

/// Every tensor of a safetensors file's bytes, as f32; `path` names the file in errors.
pub fn decode_file(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>, ImportError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ImportError::invalid(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.iter() {
        let data = decode(view.dtype(), view.data())
            .map_err(|m| ImportError::invalid(path, format!("tensor `{name}`: {m}")))?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(ImportError::invalid(
                path,
                format!(
                    "tensor `{name}` holds {} at index {i}: weights must be finite",
                    data[i]
                ),
            ));
        }
        out.push((name.to_string(), Tensor::new(view.shape().to_vec(), data)));
    }
    Ok(out)
}

/// Widens raw little-endian bytes of a floating-point dtype to f32.
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not supported (f32, f16, bf16)")),
    })
}
