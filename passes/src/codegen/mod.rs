//! Code generation (behind the `llvm` cargo feature), emitted by one LLVM target machine into the
//! artifact's `kernels.so`:
//!
//! - `x86`: the packed matrix-vector kernels, one function per (format, rows, cols), written with
//!   inkwell as generic LLVM vector IR that the target machine lowers to AVX2 or AVX-512; the
//!   object emission and the link.
//! - `ptx`: the GPU decode kernels over the GPU weight layout, emitted as PTX by LLVM's NVPTX
//!   target (a second target machine; `kernels.ptx`).
//! - `mlir`: the decoder layer's other ops (RMSNorm, RoPE, attention, SiLU-gate, residual adds)
//!   as MLIR, lowered and translated with melior into the same LLVM module.

pub mod mlir;
pub mod ptx;
pub mod x86;
