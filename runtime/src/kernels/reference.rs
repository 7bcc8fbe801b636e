//! The portable kernels: plain Rust, the reference that generated kernels are tested against and
//! the fallback of the `portable` target.

use super::{Kernels, QuantizedRows, QuantizedX};
use crate::format::BLOCK;
use crate::model::{level, PackedMatrix};
use std::ops::Range;

pub struct Reference;

impl Kernels for Reference {
    fn name(&self) -> String {
        "portable Rust".into()
    }

    fn packed_gemv(&self, m: &PackedMatrix, x: &[f32], y: &mut [f32], rows: Range<usize>) {
        let rb = m.format.row_bytes(m.cols);
        let mut levels = vec![0f32; m.cols.div_ceil(BLOCK) * BLOCK];
        for (out, r) in y.iter_mut().zip(rows) {
            let codes = m.format.unpack_row(&m.codes[r * rb..(r + 1) * rb], m.cols);
            for (l, &c) in levels.iter_mut().zip(&codes) {
                *l = level(m.format, c);
            }
            *out = m.factor[r] * dot(&levels[..m.cols], x);
        }
    }

    fn packed_gemv_i8(&self, m: &PackedMatrix, x: &QuantizedX, y: &mut [f32], rows: Range<usize>) {
        let rb = m.format.row_bytes(m.cols);
        for (out, r) in y.iter_mut().zip(rows) {
            let codes = m.format.unpack_row(&m.codes[r * rb..(r + 1) * rb], m.cols);
            // Σ level·q exactly: levels are integers or half-integers, so 2·level is an integer.
            let twice: i64 = codes
                .iter()
                .zip(&x.q)
                .map(|(&c, &q)| (2.0 * level(m.format, c)) as i64 * q as i64)
                .sum();
            *out = m.factor[r] * x.scale * (twice as f32 * 0.5);
        }
    }
}

/// `Kernels::packed_gemm` as one `packed_gemv` per token (the reference, and the fallback of
/// artifacts without matrix-matrix kernels).
pub fn gemm_by_gemv<K: Kernels + ?Sized>(
    k: &K,
    m: &PackedMatrix,
    x: &[f32],
    tokens: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let n = rows.len();
    assert!(x.len() == tokens * m.cols && y.len() == tokens * n);
    for (xt, yt) in x
        .chunks_exact(m.cols.max(1))
        .zip(y.chunks_exact_mut(n.max(1)))
    {
        k.packed_gemv(m, xt, yt, rows.clone());
    }
}

/// `Kernels::packed_gemm_i8` as one `packed_gemv_i8` per token.
pub fn gemm_i8_by_gemv<K: Kernels + ?Sized>(
    k: &K,
    m: &PackedMatrix,
    x: &QuantizedRows,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let n = rows.len();
    assert!(y.len() == x.tokens() * n);
    for (t, yt) in y.chunks_exact_mut(n.max(1)).enumerate() {
        k.packed_gemv_i8(m, &x.token(t), yt, rows.clone());
    }
}

/// A dot product with eight partial sums (so it vectorises).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y[t, r] = Σ_i x[t, i] · w[r, i]` through `gemm` (prefill and scoring of dense matrices).
pub fn dense_gemm(w: &[f32], rows: usize, cols: usize, x: &[f32], tokens: usize, y: &mut [f32]) {
    // SAFETY: the strides describe x [tokens, cols], wᵀ [cols, rows] and y [tokens, rows], all in
    // bounds of the slices (checked by the caller's shapes).
    unsafe {
        gemm::gemm(
            tokens,
            rows,
            cols,
            y.as_mut_ptr(),
            1,
            rows as isize,
            false,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}
