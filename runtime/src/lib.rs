//! The paretoqc runtime: what a compiled artifact needs at run time. It never links LLVM or MLIR,
//! and does not depend on the compiler crate.
//!
//! - `format`: the packed block formats (owned here; the compiler packs into them).
//! - `manifest`, `artifact`: the artifact folder, its checks, loading.
//! - `model`, `kernels`, `decoder`: weights in memory, matrix kernels, prefill/decode with a KV cache.
//! - `sample`, `generate`: choosing tokens and streaming text.
//! - `limits`, `fsio`, `trust`: checks on every input, regular files only, signed artifacts.
//! - `gpu_layout`: the GPU weight layout of a packed projection and its reference decoder.
//! - `testgen`: seeded test data for the tests and benchmarks of every crate.

pub mod artifact;
pub mod bits;
pub mod cli;
pub mod decoder;
pub mod error;
pub mod format;
pub mod fsio;
pub mod generate;
pub mod gpu;
pub mod gpu_layout;
pub mod kernels;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod role;
pub mod sample;
pub mod score;
pub mod team;
pub mod testgen;
pub mod trust;

pub use artifact::Artifact;
pub use error::ArtifactError;
