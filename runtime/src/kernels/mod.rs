//! Kernels: the packed matrix-vector product comes from a `Kernels` implementation (generated code
//! loaded from `kernels.so`, or the portable Rust reference); `linear` splits rows across the
//! thread pool and runs one product per token.

pub mod native;
pub mod reference;

use crate::model::{Matrix, PackedMatrix};
use rayon::prelude::*;
use std::ops::Range;

/// Rows per parallel task: enough work per task to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

/// The packed matrix-vector product: `y[r] = factor[r] · Σ_i level(code[r, i]) · x[i]` for `r` in
/// `rows`, writing `y[r - rows.start]`.
pub trait Kernels: Send + Sync {
    fn name(&self) -> String;
    fn packed_gemv(&self, m: &PackedMatrix, x: &[f32], y: &mut [f32], rows: Range<usize>);
}

/// `y[t, :] = x[t, :] · Wᵀ` for the `tokens` rows of `x`.
pub fn linear(k: &dyn Kernels, m: &Matrix, x: &[f32], tokens: usize, y: &mut [f32]) {
    let (rows, cols) = (m.rows(), m.cols());
    debug_assert_eq!(x.len(), tokens * cols);
    debug_assert_eq!(y.len(), tokens * rows);
    match m {
        Matrix::Dense { w, .. } if tokens > 1 => reference::dense_gemm(w, rows, cols, x, tokens, y),
        Matrix::Dense { w, .. } => {
            y.par_chunks_mut(ROWS_PER_TASK)
                .enumerate()
                .for_each(|(i, ys)| {
                    let r0 = i * ROWS_PER_TASK;
                    for (j, out) in ys.iter_mut().enumerate() {
                        *out = reference::dot(&w[(r0 + j) * cols..(r0 + j + 1) * cols], x);
                    }
                })
        }
        Matrix::Packed(p) => {
            for (xt, yt) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
                yt.par_chunks_mut(ROWS_PER_TASK)
                    .enumerate()
                    .for_each(|(i, ys)| {
                        let r0 = i * ROWS_PER_TASK;
                        k.packed_gemv(p, xt, ys, r0..r0 + ys.len());
                    });
            }
        }
    }
}
