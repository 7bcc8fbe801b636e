//! `manifest.json`: what an artifact holds and needs. The compiler writes it last (the artifact
//! folder is renamed into place only when complete); the runtime reads it first.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any change the runtime of the previous version could misread.
pub const FORMAT_VERSION: u32 = 2;

pub const MANIFEST: &str = "manifest.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const KERNELS: &str = "kernels.so";
pub const TOKENIZER: &str = "tokenizer.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The compiler that wrote it, e.g. `paretoqc 0.1.0`.
    pub producer: String,
    pub model: ModelConfig,
    pub target: Target,
    /// How the output projection (lm_head, or the tied embedding) is stored: "f32", "int8"
    /// (per-row absmax codes in `lm_head.qweight`) or "int4" (per-row 4-bit codes there); a tied
    /// embedding's rows are then read from them.
    #[serde(default = "f32_head")]
    pub lm_head: String,
    /// Activations of the packed products: "f32" (exact path), or "int8" (dynamic per-token).
    #[serde(default = "f32_head")]
    pub activations: String,
    /// Projection module -> bit width ("1", "1.58", "2", "3", "4" or "16").
    pub projections: BTreeMap<String, String>,
    /// Kernel symbols in `kernels.so`, by role (`gemv.<bits>.<rows>x<cols>`, `gemv_i8.…`, and
    /// the matrix-matrix `gemm.…`/`gemm_i8.…`, which older artifacts lack); empty for the portable
    /// target.
    pub kernels: BTreeMap<String, String>,
    /// File name -> checksum, for every other file of the artifact.
    pub files: BTreeMap<String, FileSum>,
}

impl Manifest {
    /// The checks that need no file: sizes and numbers of the model within `limits`, every file
    /// name a plain name inside the artifact folder.
    pub fn check(&self) -> Result<(), String> {
        self.model.dims().check()?;
        let c = &self.model;
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
            || !c.head_dim.is_multiple_of(2)
        {
            return Err(format!(
                "`num_attention_heads` {} must be a multiple of `num_key_value_heads` {} and `head_dim` {} even",
                c.num_attention_heads, c.num_key_value_heads, c.head_dim
            ));
        }
        for name in self.files.keys() {
            check_file_name(name).map_err(|m| format!("`files`: {m}"))?;
        }
        Ok(())
    }
}

impl ModelConfig {
    pub fn dims(&self) -> crate::limits::Dims {
        crate::limits::Dims {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
        }
    }
}

/// A file of an artifact is named by one plain path component: not empty, not absolute, no `/`
/// or `\`, not `.` or `..`, no NUL, and not the manifest itself. So every file the runtime opens
/// lies directly inside the artifact folder.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name != MANIFEST;
    if plain {
        Ok(())
    } else {
        Err(format!(
            "file name {name:?} is not a plain name inside the artifact folder"
        ))
    }
}

fn f32_head() -> String {
    "f32".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `x86` (generated kernels in kernels.so) or `portable` (the runtime's Rust kernels).
    pub arch: String,
    /// The CPU the kernels were generated for: `native` resolved to a name, `x86-64-v3`, ...
    pub cpu: String,
    /// CPU features the kernels use; the runtime refuses a CPU that lacks one.
    pub features: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub sha256: String,
}

impl FileSum {
    pub fn of(data: &[u8]) -> FileSum {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(data);
        FileSum {
            bytes: data.len() as u64,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}
