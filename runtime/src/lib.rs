//! The paretoqc runtime: what a compiled artifact needs at run time. It never links LLVM or MLIR,
//! and does not depend on the compiler crate.
//!
//! - `format`: the packed block formats (owned here; the compiler packs into them).
//! - `manifest`, `artifact`: the artifact folder, its checks, loading.
//! - `model`, `kernels`, `decoder`: weights in memory, matrix kernels, prefill/decode with a KV cache.
//! - `sample`, `generate`: choosing tokens and streaming text.
//! - `limits`, `fsio`, `trust`: checks on every input, regular files only, signed artifacts.

pub mod artifact;
pub mod cli;
pub mod decoder;
pub mod error;
pub mod format;
pub mod fsio;
pub mod generate;
pub mod kernels;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod sample;
pub mod score;
pub mod trust;

pub use artifact::Artifact;
pub use error::ArtifactError;
