//! `pqc`: the paretoqc compiler. Graph IR, import of Hugging Face and GGUF models, the reference
//! interpreter, the pass manager and the passes. Code generation sits behind cargo features so
//! that this crate builds and tests without LLVM or MLIR.

pub mod backend;
#[cfg(feature = "llvm")]
pub mod codegen;
pub mod driver;
pub mod eval;
pub mod import;
pub mod interp;
pub mod ir;
pub mod keep;
pub mod module;
pub mod opt;
pub mod pack;
pub mod pass;
pub mod pipeline;
pub mod qat;
pub mod quant;
pub mod rotate;
pub mod search;
pub mod tasks;
pub mod tensor;
pub mod train;
pub mod transforms;
