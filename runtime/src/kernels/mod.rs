//! Kernels: the packed matrix-vector and matrix-matrix products come from a `Kernels`
//! implementation (generated code loaded from `kernels.so`, or the portable Rust reference);
//! `linear` splits rows across the thread pool: one matrix-vector product for one token, one
//! matrix-matrix product (every 64-weight block decoded once for a tile of tokens) for several.

pub mod native;
pub mod ops;
pub mod reference;
pub mod table;

use crate::model::{Matrix, PackedMatrix};
pub use ops::HeadAttention;
use rayon::prelude::*;
use std::ops::Range;

/// Rows per parallel task: enough work per task to amortise scheduling.
const ROWS_PER_TASK: usize = 64;
/// Rows per parallel task of a matrix-matrix product: about 1024 token-rows each (a row is the
/// work of every token), 16 to 64 rows.
fn gemm_rows_per_task(tokens: usize) -> usize {
    (1024 / tokens.max(1)).clamp(16, ROWS_PER_TASK)
}

/// The kernels of a decoder: the packed matrix-vector product `y[r] = factor[r] · Σ_i
/// level(code[r, i]) · x[i]` for `r` in `rows` (writing `y[r - rows.start]`), and the layer's
/// other ops, whose defaults are the Rust reference (`ops`).
pub trait Kernels: Send + Sync {
    fn name(&self) -> String;
    fn packed_gemv(&self, m: &PackedMatrix, x: &[f32], y: &mut [f32], rows: Range<usize>);
    /// The same product with int8 activations (`QuantizedX`): `y[r] = factor[r] · scale ·
    /// Σ_i level(code[r, i]) · q[i]`.
    fn packed_gemv_i8(&self, m: &PackedMatrix, x: &QuantizedX, y: &mut [f32], rows: Range<usize>);

    /// `ops::rms_norm`.
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        ops::rms_norm(x, w, eps, out)
    }
    /// `ops::add_rms_norm`: `x += y; out = rms_norm(x)`.
    fn add_rms_norm(&self, x: &mut [f32], y: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        ops::add_rms_norm(x, y, w, eps, out)
    }
    /// `ops::rope` on rows of `width`.
    fn rope(&self, x: &mut [f32], width: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        ops::rope(x, width, head_dim, cos, sin)
    }
    /// `ops::silu_mul` on rows of `width`.
    fn silu_mul(&self, g: &mut [f32], u: &[f32], width: usize) {
        let _ = width;
        ops::silu_mul(g, u)
    }
    /// `ops::attend`: one query head over the cache.
    fn attend(&self, a: &HeadAttention, scores: &mut [f32], out: &mut [f32]) {
        ops::attend(a, scores, out)
    }
    /// The product for the `tokens` rows of `x` (`[tokens, m.cols]`): `y[t · rows.len() + r -
    /// rows.start] = factor[r] · Σ_i level(code[r, i]) · x[t, i]`. By default one `packed_gemv`
    /// per token.
    fn packed_gemm(
        &self,
        m: &PackedMatrix,
        x: &[f32],
        tokens: usize,
        y: &mut [f32],
        rows: Range<usize>,
    ) {
        reference::gemm_by_gemv(self, m, x, tokens, y, rows)
    }
    /// Whether `packed_gemm` has a kernel of its own for `m` (else it runs `packed_gemv` per
    /// token, which `linear_from` then calls itself, over larger row ranges).
    fn has_packed_gemm(&self, m: &PackedMatrix) -> bool {
        let _ = m;
        false
    }
    /// Whether `packed_gemm_i8` has a kernel of its own for `m` (else it runs `packed_gemv_i8`
    /// per token, which `linear_from` then calls itself, over larger row ranges).
    fn has_packed_gemm_i8(&self, m: &PackedMatrix) -> bool {
        let _ = m;
        false
    }
    /// `packed_gemm` with int8 activations, `y[t · rows.len() + r - rows.start]`. By default one
    /// `packed_gemv_i8` per token.
    fn packed_gemm_i8(
        &self,
        m: &PackedMatrix,
        x: &QuantizedRows,
        y: &mut [f32],
        rows: Range<usize>,
    ) {
        reference::gemm_i8_by_gemv(self, m, x, y, rows)
    }
}

/// One token's activations as i8 with one scale (absmax / 127), zero-padded to whole 64-weight
/// blocks, and the sum of the codes (the kernels' zero-point correction).
pub struct QuantizedX {
    pub q: Vec<i8>,
    pub scale: f32,
    pub sum: i32,
}

impl QuantizedX {
    pub fn new(x: &[f32]) -> QuantizedX {
        let max = abs_max(x);
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut q = vec![0i8; x.len().div_ceil(crate::format::BLOCK) * crate::format::BLOCK];
        for (qi, &v) in q.iter_mut().zip(x) {
            *qi = round_small_to_int((v / scale).clamp(-127.0, 127.0)) as i8;
        }
        let sum = q.iter().map(|&v| v as i32).sum();
        QuantizedX { q, scale, sum }
    }
}

/// The largest |v| of `x` (NaNs ignored), kept in 16 independent lanes so that the loop
/// vectorises: one running maximum is a chain of dependent instructions, which measurably
/// slowed the smallest products.
fn abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    for v in rest {
        lanes[0] = lanes[0].max(v.abs());
    }
    lanes.iter().fold(0f32, |m, &v| m.max(v))
}

/// `y.round_ties_even() as i32` for |y| <= 2^22, without the libm call that `round_ties_even` becomes on
/// baseline x86-64 (so the quantizing loop vectorises): adding 1.5·2^23 leaves no fraction bits,
/// and the default rounding mode rounds that sum to the nearest integer, ties to even.
/// The sum's bits are then those of 1.5·2^23 plus the integer, so the integer is read off them
/// without a float-to-int conversion (which baseline x86-64 does one value at a time here).
fn round_small_to_int(y: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0;
    (y + SHIFT).to_bits() as i32 - SHIFT.to_bits() as i32
}

/// Several tokens' activations, each quantized as `QuantizedX`: token t's codes are
/// `q[t · stride ..][..stride]` (`stride` = the row length padded to whole blocks).
pub struct QuantizedRows {
    pub q: Vec<i8>,
    pub stride: usize,
    pub scale: Vec<f32>,
    pub sum: Vec<i32>,
}

impl QuantizedRows {
    /// Quantizes each row of `cols` values of `x`.
    pub fn new(x: &[f32], cols: usize) -> QuantizedRows {
        let stride = cols.div_ceil(crate::format::BLOCK) * crate::format::BLOCK;
        let tokens = x.len().checked_div(cols).unwrap_or(0);
        let mut out = QuantizedRows {
            q: Vec::with_capacity(tokens * stride),
            stride,
            scale: Vec::with_capacity(tokens),
            sum: Vec::with_capacity(tokens),
        };
        for row in x.chunks_exact(cols.max(1)) {
            let t = QuantizedX::new(row);
            out.q.extend_from_slice(&t.q);
            out.scale.push(t.scale);
            out.sum.push(t.sum);
        }
        out
    }

    pub fn tokens(&self) -> usize {
        self.scale.len()
    }

    /// Token t alone.
    pub fn token(&self, t: usize) -> QuantizedX {
        QuantizedX {
            q: self.q[t * self.stride..(t + 1) * self.stride].to_vec(),
            scale: self.scale[t],
            sum: self.sum[t],
        }
    }
}

/// How activations enter packed matrix products: f32, or dynamic per-token int8 (the 8-bit
/// output head stays f32). The manifest's `activations`.
pub use crate::manifest::ActivationKind as Activations;

/// `y[t, :] = x[t, :] · Wᵀ` for the `tokens` rows of `x`, f32 activations.
pub fn linear(k: &dyn Kernels, m: &Matrix, x: &[f32], tokens: usize, y: &mut [f32]) {
    linear_with(k, m, x, tokens, y, Activations::F32)
}

/// `linear` with the given activation numerics for packed matrices.
pub fn linear_with(
    k: &dyn Kernels,
    m: &Matrix,
    x: &[f32],
    tokens: usize,
    y: &mut [f32],
    act: Activations,
) {
    linear_from(k, m, &LinearInput::new(x, tokens, act), y)
}

/// The input rows of one or more `linear` products. With int8 activations the rows are
/// quantized once, on first use by a packed matrix, and shared by every matrix that reads
/// them (q/k/v, gate/up).
pub struct LinearInput<'a> {
    x: &'a [f32],
    tokens: usize,
    act: Activations,
    quantized: std::sync::OnceLock<Quantized>,
}

/// Int8 activations of one token (the matrix-vector kernels) or of several (matrix-matrix).
enum Quantized {
    One(QuantizedX),
    Rows(QuantizedRows),
}

impl<'a> LinearInput<'a> {
    pub fn new(x: &'a [f32], tokens: usize, act: Activations) -> LinearInput<'a> {
        LinearInput {
            x,
            tokens,
            act,
            quantized: std::sync::OnceLock::new(),
        }
    }

    fn quantized(&self, cols: usize) -> &Quantized {
        self.quantized.get_or_init(|| match self.tokens {
            1 => Quantized::One(QuantizedX::new(self.x)),
            _ => Quantized::Rows(QuantizedRows::new(self.x, cols)),
        })
    }
}

/// `y[t, :] = x[t, :] · Wᵀ` for the rows of `input`.
pub fn linear_from(k: &dyn Kernels, m: &Matrix, input: &LinearInput, y: &mut [f32]) {
    let (rows, cols, x, tokens) = (m.rows(), m.cols(), input.x, input.tokens);
    debug_assert_eq!(x.len(), tokens * cols);
    debug_assert_eq!(y.len(), tokens * rows);
    let per_task = gemv_rows_per_task(rows);
    match m {
        Matrix::Dense { w, .. } if tokens > 1 => reference::dense_gemm(w, rows, cols, x, tokens, y),
        Matrix::Dense { w, .. } => by_row_tasks(y, per_task, |ys, r| {
            for (out, row) in ys.iter_mut().zip(r) {
                *out = reference::dot(&w[row * cols..(row + 1) * cols], x);
            }
        }),
        Matrix::Packed(p)
            if input.act == Activations::Int8 && p.format != crate::format::Format::Int8 =>
        {
            match input.quantized(cols) {
                Quantized::Rows(xq) if k.has_packed_gemm_i8(p) => {
                    by_row_chunks(rows, tokens, y, |out, r| k.packed_gemm_i8(p, xq, out, r))
                }
                Quantized::Rows(xq) => {
                    for (t, yt) in y.chunks_exact_mut(rows).enumerate() {
                        let xt = xq.token(t);
                        by_row_tasks(yt, per_task, |ys, r| k.packed_gemv_i8(p, &xt, ys, r));
                    }
                }
                Quantized::One(xq) => {
                    by_row_tasks(y, per_task, |ys, r| k.packed_gemv_i8(p, xq, ys, r))
                }
            }
        }
        Matrix::Packed(p) if tokens > 1 && k.has_packed_gemm(p) => {
            by_row_chunks(rows, tokens, y, |out, r| {
                k.packed_gemm(p, x, tokens, out, r)
            });
        }
        Matrix::Packed(p) => {
            for (xt, yt) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
                by_row_tasks(yt, per_task, |ys, r| k.packed_gemv(p, xt, ys, r));
            }
        }
    }
}

/// Runs `f(ys, rows)` in parallel on the pieces of one token's output `y`, `per_task` rows each
/// (`ys` is `y[rows]`).
fn by_row_tasks(y: &mut [f32], per_task: usize, f: impl Fn(&mut [f32], Range<usize>) + Sync) {
    y.par_chunks_mut(per_task).enumerate().for_each(|(i, ys)| {
        let r0 = i * per_task;
        f(ys, r0..r0 + ys.len())
    });
}

/// Rows per task of a matrix-vector product: two equal tasks per thread (a multiple of 4 rows,
/// the int8 kernels' row group, and at least 16), so small matrices split evenly instead of into
/// 64-row pieces that leave one thread with the remainder; one task on one thread (each call
/// has a fixed cost, which the smallest products feel).
fn gemv_rows_per_task(rows: usize) -> usize {
    let tasks = match rayon::current_num_threads() {
        1 => 1,
        threads => 2 * threads,
    };
    rows.div_ceil(tasks).next_multiple_of(4).max(16)
}

/// Runs `f(out, rows)` on chunks of `gemm_rows_per_task` rows in parallel, each writing its rows
/// of every token (`out` is `[tokens, rows.len()]`), then gathers them into `y` `[tokens, rows]`.
fn by_row_chunks(
    rows: usize,
    tokens: usize,
    y: &mut [f32],
    f: impl Fn(&mut [f32], Range<usize>) + Sync,
) {
    let chunk_rows = gemm_rows_per_task(tokens);
    let per_task = chunk_rows * tokens;
    let mut chunks = vec![0f32; rows * tokens];
    chunks
        .par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(i, out)| {
            let r0 = i * chunk_rows;
            f(out, r0..r0 + out.len() / tokens);
        });
    for (i, chunk) in chunks.chunks(per_task).enumerate() {
        let (r0, n) = (i * chunk_rows, chunk.len() / tokens);
        for (t, part) in chunk.chunks_exact(n).enumerate() {
            y[t * rows + r0..t * rows + r0 + n].copy_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rounding_is_round_ties_even() {
        let mut y = -130.0f32;
        while y <= 130.0 {
            assert_eq!(round_small_to_int(y), y.round_ties_even() as i32, "{y}");
            y += 0.125;
        }
        for y in [0.49999997f32, -0.49999997, 126.50001, 2.5000002, -1e-30] {
            assert_eq!(round_small_to_int(y), y.round_ties_even() as i32, "{y}");
        }
    }
}
