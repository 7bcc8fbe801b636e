//! The paretoqc runtime: what a compiled artifact needs at run time. It never links LLVM or MLIR.

pub mod format;
