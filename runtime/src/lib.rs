//! The paretoqc runtime: what a compiled artifact needs at run time. It never links LLVM or MLIR,
//! and does not depend on the compiler crate.
//!
//! - `format`: the packed block formats (owned here; the compiler packs into them).
//! - `manifest`, `artifact`: the artifact folder, its checks, loading.
//! - `model`, `kernels`, `decoder`: weights in memory, matrix kernels, prefill/decode with a KV cache.
//! - `sample`, `generate`: choosing tokens and streaming text.

pub mod artifact;
pub mod cli;
pub mod decoder;
pub mod error;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod manifest;
pub mod model;
pub mod sample;
pub mod score;

pub use artifact::Artifact;
pub use error::ArtifactError;
