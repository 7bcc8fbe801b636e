//! GGUF import: reads a llama.cpp GGUF file (format versions 2 and 3) that holds a model of the
//! `llama` architecture and returns what the rest of the importer works with:
//!
//! - a `LlamaConfig` built from the `llama.*` metadata;
//! - every weight dequantized to an f32 `Tensor` under its Hugging Face name and shape, with the
//!   row permutation that llama.cpp's converter applies to `attn_q` / `attn_k` undone, so the
//!   tensors equal the original `q_proj` / `k_proj` (up to the quantization itself);
//! - a Hugging Face `tokenizer.json`, rebuilt from the `tokenizer.ggml.*` metadata.
//!
//! The file is memory-mapped and every read is bounds-checked: a truncated or corrupt file is an
//! `ImportError` that says what is wrong, never a panic.
//!
//! What it does not do:
//! - dequantize anything but F32, F16, BF16, Q4_0, Q4_1 and Q8_0 (K-quants, IQ and the other types
//!   are rejected, naming their ggml type number);
//! - import other architectures than `llama` (no mixture-of-experts, no fused QKV), or
//!   big-endian files;
//! - rebuild tokenizers other than byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with a
//!   pre-tokenizer it knows (`smollm`, `gpt-2`, `llama-bpe`); sentencepiece (`"llama"`)
//!   vocabularies are rejected rather than approximated;
//! - decide whether the config is one paretoqc can run (`LlamaConfig::check_supported` does), or
//!   load the tokenizer (the caller parses `tokenizer_json`).

mod config;
mod dequant;
mod file;
mod metadata;
mod summary;
mod tensors;
mod tokenizer;

#[cfg(test)]
mod tests;

use self::config::read_config;
use self::file::parse;
use self::summary::summarize;
use self::tensors::read_tensors;
use self::tokenizer::build_tokenizer_json;
use super::config::LlamaConfig;
use super::error::ImportError;
use crate::tensor::Tensor;
use std::path::Path;

/// A model read from a GGUF file, in Hugging Face terms.
pub struct GgufModel {
    pub config: LlamaConfig,
    /// Hugging Face names and shapes (`[out, in]` for projections), f32.
    pub tensors: Vec<(String, Tensor)>,
    /// A Hugging Face `tokenizer.json` that the `tokenizers` crate loads.
    pub tokenizer_json: String,
    /// A few human-readable facts about the file, for `paretoqc inspect`.
    pub metadata_summary: Vec<(String, String)>,
}

/// Reads, checks and dequantizes a GGUF file.
pub fn read_gguf(path: &Path) -> Result<GgufModel, ImportError> {
    let file =
        paretoqc_runtime::fsio::open_regular(path, true).map_err(|e| ImportError::io(path, e))?;
    // SAFETY: the map is read-only and lives only for this call. As with any memory map, we rely
    // on no other process truncating or rewriting the file while we read it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ImportError::io(path, e))?;
    decode(&map).map_err(|message| ImportError::invalid(path, message))
}

/// Everything `read_gguf` does after mapping the file; errors are messages without the path.
pub fn decode(bytes: &[u8]) -> Result<GgufModel, String> {
    let file = parse(bytes)?;
    let config = read_config(&file.metadata, &file.tensors)?;
    config.check_limits()?;
    let tensors = read_tensors(&file.tensors, &config)?;
    let tokenizer_json = build_tokenizer_json(&file.metadata)?;
    let metadata_summary = summarize(&file);
    Ok(GgufModel {
        config,
        tensors,
        tokenizer_json,
        metadata_summary,
    })
}
