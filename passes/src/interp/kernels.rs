//! Reference kernels of the interpreter, f32, on row-major slices. They follow Hugging Face's
//! LLaMA arithmetic (order of operations included) closely enough to match its logits to 1e-5.
//! Parallel over rows or heads with rayon; dense matmul goes through the `gemm` crate.

use rayon::prelude::*;

/// Rows above which a row-wise kernel is worth splitting across threads.
const PAR_ROWS: usize = 4;

/// `out[T,N] = x[T,K] · w[N,K]ᵀ`.
pub fn linear(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * n];
    if rows == 0 || n == 0 {
        return out;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && rows * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the strides describe exactly the buffers above: dst is rows x n row-major, lhs is
    // rows x k row-major, rhs is wᵀ (k x n) read from w[n][k] with row stride 1, column stride k.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    out
}

/// Applies `f` to each row of `data` (rows of `n`), in parallel when there are enough rows.
fn for_rows(data: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if n == 0 {
        return;
    }
    if data.len() / n >= PAR_ROWS {
        data.par_chunks_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        data.chunks_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

/// `x * rsqrt(mean(x²) + eps) * w` per row, in Hugging Face's order.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let n = w.len();
    let mut out = x.to_vec();
    for_rows(&mut out, n, |_, row| {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        for (v, wi) in row.iter_mut().zip(w) {
            *v = wi * (*v * inv);
        }
    });
    out
}

/// The inverse frequencies of RoPE, computed as transformers does (f32 powers).
pub fn rope_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Rotate-half RoPE on `[T, heads*head_dim]`; row t is position `t + offset`.
pub fn rope(x: &[f32], width: usize, head_dim: usize, theta: f64, offset: usize) -> Vec<f32> {
    let inv_freq = rope_inv_freq(head_dim, theta);
    let half = head_dim / 2;
    let mut out = x.to_vec();
    for_rows(&mut out, width, |t, row| {
        let pos = (t + offset) as f32;
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|f| ((pos * f).cos(), (pos * f).sin()))
            .unzip();
        for head in row.chunks_mut(head_dim) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    });
    out
}

/// Shapes of a grouped-query attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Causal softmax attention; query row t sees key rows 0..=t. Parallel over (head, row).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Vec<f32> {
    let (d, qw, kw) = (s.head_dim, s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; s.rows * qw];
    out.par_chunks_mut(qw).enumerate().for_each(|(t, out_row)| {
        let mut scores = vec![0.0f32; t + 1];
        for h in 0..s.heads {
            let kv = (h / group) * d;
            let qh = &q[t * qw + h * d..t * qw + (h + 1) * d];
            for (j, sc) in scores.iter_mut().enumerate() {
                *sc = dot(qh, &k[j * kw + kv..j * kw + kv + d]) * scale;
            }
            softmax_in_place(&mut scores);
            let o = &mut out_row[h * d..(h + 1) * d];
            for (j, p) in scores.iter().enumerate() {
                for (oi, vi) in o.iter_mut().zip(&v[j * kw + kv..j * kw + kv + d]) {
                    *oi += p * vi;
                }
            }
        }
    });
    out
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler vectorise the loop.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for i in 0..8 {
            acc[i] += a[c * 8 + i] * b[c * 8 + i];
        }
    }
    let tail: f32 = (chunks * 8..a.len()).map(|i| a[i] * b[i]).sum();
    acc.iter().sum::<f32>() + tail
}

pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `x - max - ln Σ exp(x - max)` per row of `n`.
pub fn log_softmax(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for_rows(&mut out, n, |_, row| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = row
            .iter()
            .map(|v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32
            + max;
        for v in row.iter_mut() {
            *v -= lse;
        }
    });
    out
}

/// Per-row negative log-likelihood of the target column.
pub fn nll(logp: &[f32], n: usize, targets: &[i32]) -> Vec<f64> {
    targets
        .iter()
        .enumerate()
        .map(|(r, &t)| -(logp[r * n + t as usize] as f64))
        .collect()
}
