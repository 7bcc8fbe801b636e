//! Code generation (behind the `llvm` cargo feature): LLVM IR built with inkwell, emitted by an
//! LLVM target machine into the artifact's `kernels.so`.
//!
//! - `x86`: the packed matrix-vector kernels, one function per (format, rows, cols), written as
//!   generic LLVM vector IR that the target machine lowers to AVX2 or AVX-512.

pub mod mlir;
pub mod x86;
