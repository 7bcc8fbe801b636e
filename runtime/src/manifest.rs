//! `manifest.json`: what an artifact holds and needs. The compiler writes it last (the artifact
//! folder is renamed into place only when complete); the runtime reads it first.

use crate::bits::Bits;
use crate::role::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any change the runtime of the previous version could misread.
pub const FORMAT_VERSION: u32 = 2;

pub const MANIFEST: &str = "manifest.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const KERNELS: &str = "kernels.so";
/// The kernels of a PTX artifact (`Arch::Ptx`), as PTX text.
pub const PTX: &str = "kernels.ptx";
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
    #[serde(default)]
    pub lm_head: HeadStorage,
    /// Activations of the packed products: "f32" (exact path), or "int8" (dynamic per-token).
    #[serde(default)]
    pub activations: ActivationKind,
    /// Projection module -> bit width ("1", "1.58", "2", "3", "4" or "16").
    pub projections: BTreeMap<String, Bits>,
    /// Kernel symbols in `kernels.so`, by role (`gemv.<bits>.<rows>x<cols>`, `gemv_i8.…`, and
    /// the matrix-matrix `gemm.…`/`gemm_i8.…`, which older artifacts lack); empty for the portable
    /// target.
    pub kernels: BTreeMap<Role, String>,
    /// File name -> checksum, for every other file of the artifact.
    pub files: BTreeMap<String, FileSum>,
    /// How the GPU kernels are launched (PTX artifacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// The launch shape of the GPU decode kernels: a grid of ceil(rows / `rows_per_block`) thread
/// blocks of `threads_per_block` threads (one warp per row); activations in fp16, zero past the
/// row length up to whole 64-weight blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub threads_per_block: u32,
    pub rows_per_block: u32,
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
        if let Some(l) = self.launch {
            // A warp per row: the block holds exactly rows_per_block warps, within CUDA's 1024.
            if l.rows_per_block == 0
                || l.threads_per_block != 32 * l.rows_per_block
                || l.threads_per_block > 1024
            {
                return Err(format!(
                    "`launch`: {} threads for {} rows per block (a warp of 32 threads per row, at most 1024)",
                    l.threads_per_block, l.rows_per_block
                ));
            }
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

/// How an artifact stores the output projection (`Manifest::lm_head`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadStorage {
    /// Dense f32 (`lm_head.weight`, or the tied embedding).
    #[default]
    F32,
    /// Per-row absmax 8-bit codes in `lm_head.qweight`.
    Int8,
    /// Per-row 4-bit codes with a searched clip in `lm_head.qweight`.
    Int4,
}

impl HeadStorage {
    /// The name on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            HeadStorage::F32 => "f32",
            HeadStorage::Int8 => "int8",
            HeadStorage::Int4 => "int4",
        }
    }

    pub fn parse(s: &str) -> Result<HeadStorage, String> {
        match s {
            "f32" => Ok(HeadStorage::F32),
            "int8" => Ok(HeadStorage::Int8),
            "int4" => Ok(HeadStorage::Int4),
            other => Err(format!("unknown head storage `{other}` (f32, int8, int4)")),
        }
    }
}

/// Activations of the packed products (`Manifest::activations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    /// f32, exactly as the interpreter computes.
    #[default]
    F32,
    /// Dynamic per-token 8-bit activations with integer dot products.
    Int8,
}

impl ActivationKind {
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::F32 => "f32",
            ActivationKind::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Result<ActivationKind, String> {
        match s {
            "f32" => Ok(ActivationKind::F32),
            "int8" => Ok(ActivationKind::Int8),
            other => Err(format!("unknown activations `{other}` (f32, int8)")),
        }
    }
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

/// What an artifact's code runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Generated kernels in kernels.so for an x86-64 CPU.
    X86,
    /// The runtime's own Rust kernels, on any CPU.
    Portable,
    /// PTX kernels (`kernels.ptx`) for an NVIDIA GPU; `Target::cpu` names the GPU (`sm_90`).
    Ptx,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Portable => "portable",
            Arch::Ptx => "ptx",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `x86` (generated kernels in kernels.so) or `portable` (the runtime's Rust kernels).
    pub arch: Arch,
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
