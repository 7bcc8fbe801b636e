//! Reference kernels of the interpreter on row-major slices, generic over the float type: the
//! interpreter runs them in f32, the gradient checks in f64. They follow Hugging Face's LLaMA
//! arithmetic (order of operations included) closely enough to match its logits to 1e-6.
//! Parallel over rows or heads with rayon; dense matmul goes through the `gemm` crate.

use num_traits::Float;
use rayon::prelude::*;

/// The element types the kernels run on (f32 and f64).
pub trait Real: Float + Send + Sync + std::iter::Sum + std::ops::AddAssign + 'static {
    /// e^x, fast and within a few ulps: the kernels' exponential (softmax, SiLU, log-softmax).
    fn exp_fast(self) -> Self;
}

impl Real for f64 {
    fn exp_fast(self) -> f64 {
        self.exp()
    }
}

impl Real for f32 {
    fn exp_fast(self) -> f32 {
        exp_f32(self)
    }
}

/// e^x in f32, branch-free so loops over it vectorise: x = n·ln2 + r with |r| <= ln2/2 (ln2 split
/// in a high and a low part, so r is exact to a few ulps), e^r by Cephes' minimax polynomial, then
/// the exponent n put into the float's bits. Relative error under 3e-7 for x in [-87, 88];
/// below -87 the result is 0, above 88 it is e^88.
#[inline(always)]
pub fn exp_f32(x_in: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // n = round(x·log2 e) by adding and taking away 1.5·2^23 (|x·log2 e| < 128, so exact), and
    // 2^n from the low bits of the sum: `f32::round` and the f32-to-int conversion are a libm
    // call and a saturating sequence on x86-64's baseline, which kept the loops from vectorising.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x_in.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let k = t.to_bits().wrapping_sub(SHIFTER.to_bits());
    let v = e * f32::from_bits(k.wrapping_add(127) << 23);
    if x_in < -87.0 {
        0.0
    } else {
        v
    }
}

/// A constant in the kernel's float type.
pub fn c<T: Real>(v: f64) -> T {
    T::from(v).expect("every f64 converts to f32/f64")
}

/// Rows above which a row-wise kernel is worth splitting across threads.
const PAR_ROWS: usize = 4;

/// A matrix operand of `matmul`: its data and its row and column strides.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix with rows of `cols`.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Mat {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major matrix with rows of `cols`.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Mat {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// `out[m,n] (+)= a[m,k] · b[k,n]` with `out` row-major; `accumulate` adds to `out`.
pub fn matmul<T: Real>(
    out: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(out.len() >= m * n, "matmul output too small");
    let last = |x: &Mat<T>, r: usize, cc: usize| {
        (r.max(1) - 1) * x.row_stride + (cc.max(1) - 1) * x.col_stride
    };
    assert!(
        m * k == 0 || last(&a, m, k) < a.data.len(),
        "matmul lhs too small"
    );
    assert!(
        k * n == 0 || last(&b, k, n) < b.data.len(),
        "matmul rhs too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above check that every index the strides reach is inside its slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

/// `out[T,N] = x[T,K] · w[N,K]ᵀ`.
pub fn linear<T: Real>(x: &[T], w: &[T], rows: usize, k: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); rows * n];
    matmul(
        &mut out,
        Mat::rows(x, k),
        Mat::transposed(w, k),
        (rows, k, n),
        false,
    );
    out
}

/// Applies `f` to each row of `data` (rows of `n`), in parallel when there are enough rows.
pub fn for_rows<T: Real>(data: &mut [T], n: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
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

/// `1 / sqrt(mean(x²) + eps)` of one row. The sum of squares is taken in f64: over 30 layers an
/// f32 running sum drifts measurably further from the exact value than PyTorch's (which sums
/// pairwise), and the cost is nothing next to the matrix products.
pub fn rms_inv<T: Real>(row: &[T], eps: f64) -> T {
    let ss: f64 = row
        .iter()
        .map(|&v| {
            let v = v.to_f64().unwrap_or(f64::NAN);
            v * v
        })
        .sum();
    let ms: T = c(ss / row.len() as f64);
    T::one() / (ms + c(eps)).sqrt()
}

/// `w * (x * rsqrt(mean(x²) + eps))` per row, in Hugging Face's order.
pub fn rms_norm<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let mut out = x.to_vec();
    for_rows(&mut out, w.len(), |_, row| {
        let inv = rms_inv(row, eps);
        for (v, &wi) in row.iter_mut().zip(w) {
            *v = wi * (*v * inv);
        }
    });
    out
}

/// The inverse frequencies of RoPE, computed as transformers does (powers in the float type).
pub fn rope_inv_freq<T: Real>(head_dim: usize, theta: f64) -> Vec<T> {
    (0..head_dim / 2)
        .map(|i| T::one() / c::<T>(theta).powf(c::<T>((2 * i) as f64) / c(head_dim as f64)))
        .collect()
}

/// Rotate-half RoPE on `[T, heads*head_dim]`; row t is position `t mod seq` (sequences of `seq`
/// rows packed one after the other). With `inverse`, rotates by the negative angle (the
/// transpose, used by the backward pass).
pub fn rope<T: Real>(
    x: &[T],
    width: usize,
    head_dim: usize,
    theta: f64,
    inverse: bool,
    seq: usize,
) -> Vec<T> {
    let inv_freq = rope_inv_freq::<T>(head_dim, theta);
    let half = head_dim / 2;
    let mut out = x.to_vec();
    for_rows(&mut out, width, |t, row| {
        let pos: T = c((t % seq.max(1)) as f64);
        let cos: Vec<T> = inv_freq.iter().map(|&f| (pos * f).cos()).collect();
        let sin: Vec<T> = inv_freq
            .iter()
            .map(|&f| {
                if inverse {
                    -(pos * f).sin()
                } else {
                    (pos * f).sin()
                }
            })
            .collect();
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

impl AttnShape {
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Column offset of the key/value head that query head `h` reads.
    pub fn kv_offset(&self, h: usize) -> usize {
        (h / (self.heads / self.kv_heads)) * self.head_dim
    }
}

/// Causal softmax probabilities of query head `h`: row t holds p(t, 0..=t), zeros after.
pub fn attention_probs<T: Real>(q: &[T], k: &[T], s: AttnShape, h: usize) -> Vec<T> {
    let (d, qw, kw, n) = (s.head_dim, s.q_width(), s.kv_width(), s.rows);
    let mut p = vec![T::zero(); n * n];
    let qh = &q[h * d..];
    let kh = &k[s.kv_offset(h)..];
    matmul(
        &mut p,
        Mat {
            data: qh,
            row_stride: qw,
            col_stride: 1,
        },
        Mat {
            data: kh,
            row_stride: 1,
            col_stride: kw,
        },
        (n, d, n),
        false,
    );
    let scale = T::one() / c::<T>(d as f64).sqrt();
    for (t, row) in p.chunks_mut(n).enumerate() {
        for v in row[..=t].iter_mut() {
            *v = *v * scale;
        }
        softmax_in_place(&mut row[..=t]);
        for v in row[t + 1..].iter_mut() {
            *v = T::zero();
        }
    }
    p
}

/// Causal softmax attention; query row t sees key rows 0..=t. Parallel over heads.
pub fn attention<T: Real>(q: &[T], k: &[T], v: &[T], s: AttnShape) -> Vec<T> {
    let (d, n, kw) = (s.head_dim, s.rows, s.kv_width());
    let heads: Vec<Vec<T>> = (0..s.heads)
        .into_par_iter()
        .map(|h| {
            let p = attention_probs(q, k, s, h);
            let mut o = vec![T::zero(); n * d];
            let vh = &v[s.kv_offset(h)..];
            matmul(
                &mut o,
                Mat::rows(&p, n),
                Mat {
                    data: vh,
                    row_stride: kw,
                    col_stride: 1,
                },
                (n, n, d),
                false,
            );
            o
        })
        .collect();
    interleave_heads(&heads, n, d)
}

/// `attention` over packed sequences of `s.rows` rows each (the data holds a whole number of
/// them): each sequence attends only within itself. Parallel over sequences and heads.
pub fn attention_packed<T: Real>(q: &[T], k: &[T], v: &[T], s: AttnShape) -> Vec<T> {
    let (qw, kw, n) = (s.q_width(), s.kv_width(), s.rows);
    if n == 0 || q.len() == n * qw {
        return attention(q, k, v, s);
    }
    let seqs = q.len() / (n * qw);
    let parts: Vec<Vec<T>> = (0..seqs)
        .into_par_iter()
        .map(|b| {
            attention(
                &q[b * n * qw..(b + 1) * n * qw],
                &k[b * n * kw..(b + 1) * n * kw],
                &v[b * n * kw..(b + 1) * n * kw],
                s,
            )
        })
        .collect();
    parts.concat()
}

/// Puts per-head `[rows, d]` blocks side by side as `[rows, heads*d]`.
pub fn interleave_heads<T: Real>(heads: &[Vec<T>], rows: usize, d: usize) -> Vec<T> {
    let width = heads.len() * d;
    let mut out = vec![T::zero(); rows * width];
    for (h, block) in heads.iter().enumerate() {
        for t in 0..rows {
            out[t * width + h * d..t * width + (h + 1) * d]
                .copy_from_slice(&block[t * d..(t + 1) * d]);
        }
    }
    out
}

/// Σ f(a[i], b[i]) in f64, as eight interleaved partial sums so the loop vectorises (one f64
/// running sum is a chain of dependent adds; the result is as accurate for these lengths).
pub fn sum_f64<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let mut e = [T::zero(); LANES];
        for j in 0..LANES {
            e[j] = f(x[j], y[j]);
        }
        for j in 0..LANES {
            acc[j] += e[j].to_f64().unwrap_or(f64::NAN);
        }
    }
    let tail: f64 = ta
        .iter()
        .zip(tb)
        .map(|(&x, &y)| f(x, y).to_f64().unwrap_or(f64::NAN))
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// Softmax of one row; the normaliser is summed in f64 (see `rms_inv`).
pub fn softmax_in_place<T: Real>(x: &mut [T]) {
    let max = x.iter().copied().fold(T::neg_infinity(), T::max);
    for v in x.iter_mut() {
        *v = (*v - max).exp_fast();
    }
    let sum: T = c(sum_f64(x, x, |v, _| v));
    for v in x.iter_mut() {
        *v = *v / sum;
    }
}

/// Elements per task of the elementwise kernels (below it they run on the calling thread).
const PAR_ELEMS: usize = 1 << 15;

/// `f(a[i], b[i])` for each i (b as long as a), split across threads on long slices.
pub fn zip_map<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    let run = |(o, (a, b)): (&mut [T], (&[T], &[T]))| {
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    };
    if a.len() > PAR_ELEMS {
        out.par_chunks_mut(PAR_ELEMS)
            .zip(a.par_chunks(PAR_ELEMS).zip(b.par_chunks(PAR_ELEMS)))
            .for_each(run);
    } else {
        run((&mut out, (a, b)));
    }
    out
}

pub fn sigmoid<T: Real>(v: T) -> T {
    T::one() / (T::one() + (-v).exp_fast())
}

pub fn silu<T: Real>(x: &[T]) -> Vec<T> {
    zip_map(x, x, |v, _| v * sigmoid(v))
}

pub fn mul<T: Real>(a: &[T], b: &[T]) -> Vec<T> {
    zip_map(a, b, |x, y| x * y)
}

pub fn add<T: Real>(a: &[T], b: &[T]) -> Vec<T> {
    zip_map(a, b, |x, y| x + y)
}

/// `x - max - ln Σ exp(x - max)` per row of `n`; the sum is taken in f64.
pub fn log_softmax<T: Real>(x: &[T], n: usize) -> Vec<T> {
    let mut out = x.to_vec();
    for_rows(&mut out, n, |_, row| {
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let sum = sum_f64(row, row, |v, _| (v - max).exp_fast());
        let lse = c::<T>(sum.ln()) + max;
        for v in row.iter_mut() {
            *v = *v - lse;
        }
    });
    out
}

/// Per-row negative log-likelihood of the target column, in f64.
pub fn nll<T: Real>(logp: &[T], n: usize, targets: &[i32]) -> Vec<f64> {
    targets
        .iter()
        .enumerate()
        .map(|(r, &t)| -logp[r * n + t as usize].to_f64().unwrap_or(f64::NAN))
        .collect()
}

/// The distillation loss of `Op::Distill`, in f64: per row `(1-ce)·Σ_v p_t(v)·(log p_t(v) -
/// logp(v)) + ce·(-logp[target])` with p_t = exp(teacher_logp), averaged over rows.
pub fn distill<T: Real>(logp: &[T], teacher: &[T], targets: &[i32], n: usize, ce: f64) -> f64 {
    let rows = targets.len();
    let per_row: Vec<f64> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let (s, t) = (&logp[r * n..(r + 1) * n], &teacher[r * n..(r + 1) * n]);
            // p·(lt - ls) in the float type, summed in f64; p = 0 adds nothing (also where
            // lt = -inf, which would give 0·inf).
            let kl = sum_f64(s, t, |ls, lt| {
                let p = lt.exp_fast();
                if p == T::zero() {
                    T::zero()
                } else {
                    p * (lt - ls)
                }
            });
            let nll = -s[targets[r] as usize].to_f64().unwrap_or(f64::NAN);
            (1.0 - ce) * kl + ce * nll
        })
        .collect();
    per_row.iter().sum::<f64>() / rows.max(1) as f64
}

/// Mean over all elements of `w[c]·(x - y)²` (rows of `w.len()` channels), in f64.
pub fn mse<T: Real>(x: &[T], y: &[T], w: &[T]) -> f64 {
    let c = w.len().max(1);
    let sum: f64 = x
        .par_chunks(c)
        .zip(y.par_chunks(c))
        .map(|(xr, yr)| {
            xr.iter()
                .zip(yr)
                .zip(w)
                .map(|((&a, &b), &wc)| {
                    let d = (a - b).to_f64().unwrap_or(f64::NAN);
                    wc.to_f64().unwrap_or(f64::NAN) * d * d
                })
                .sum::<f64>()
        })
        .sum();
    sum / x.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    /// The fast exponential against f64's over the range the kernels use.
    #[test]
    fn exp_f32_is_within_a_few_ulps() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f64 / 200_000.0;
            let want = x.exp();
            let got = exp_f32(x as f32) as f64;
            let want_at_f32_input = (x as f32 as f64).exp();
            worst = worst.max(((got - want_at_f32_input) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
