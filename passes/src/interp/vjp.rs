//! The gradient rules: one vector-Jacobian product per op, generic over the float type so the
//! tests can check each against central finite differences in f64. `grad.rs` calls them in
//! reverse order. `fake_quant`'s rule is the straight-through estimator of `crate::quant`,
//! checked against the reference's golden vectors instead (it is not the true derivative).

use super::kernels::{self, c, for_rows, matmul, rms_inv, sigmoid, AttnShape, Mat, Real};

/// Embedding: the table's gradient gets each output row added at its id's row.
pub fn embedding<T: Real>(dy: &[T], ids: &[i32], vocab: usize, h: usize) -> Vec<T> {
    let mut dtable = vec![T::zero(); vocab * h];
    for (r, &id) in ids.iter().enumerate() {
        let row = &mut dtable[id as usize * h..(id as usize + 1) * h];
        for (d, &g) in row.iter_mut().zip(&dy[r * h..(r + 1) * h]) {
            *d += g;
        }
    }
    dtable
}

/// RMSNorm: with n = x·inv and g = dy⊙w, dx = inv·(g - n·mean(g⊙n)) and dw = Σ_rows dy⊙n.
pub fn rms_norm<T: Real>(dy: &[T], x: &[T], w: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let h = w.len();
    let mut dx = vec![T::zero(); x.len()];
    for_rows(&mut dx, h, |r, out| {
        let xr = &x[r * h..(r + 1) * h];
        let inv = rms_inv(xr, eps);
        let g: Vec<T> = dy[r * h..(r + 1) * h]
            .iter()
            .zip(w)
            .map(|(&d, &wi)| d * wi)
            .collect();
        let mean = g.iter().zip(xr).map(|(&gi, &xi)| gi * xi * inv).sum::<T>() / c(h as f64);
        for ((o, &gi), &xi) in out.iter_mut().zip(&g).zip(xr) {
            *o = inv * (gi - xi * inv * mean);
        }
    });
    let mut dw = vec![T::zero(); h];
    for (xr, dr) in x.chunks(h).zip(dy.chunks(h)) {
        let inv = rms_inv(xr, eps);
        for ((d, &xi), &gi) in dw.iter_mut().zip(xr).zip(dr) {
            *d += gi * xi * inv;
        }
    }
    (dx, dw)
}

/// Linear y = x·wᵀ: dx = dy·w and dw = dyᵀ·x.
pub fn linear<T: Real>(
    dy: &[T],
    x: &[T],
    w: &[T],
    rows: usize,
    k: usize,
    n: usize,
) -> (Vec<T>, Vec<T>) {
    (linear_dx(dy, w, rows, k, n), linear_dw(dy, x, rows, k, n))
}

/// `linear`'s dx = dy·w alone.
pub fn linear_dx<T: Real>(dy: &[T], w: &[T], rows: usize, k: usize, n: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); rows * k];
    matmul(
        &mut dx,
        Mat::rows(dy, n),
        Mat::rows(w, k),
        (rows, n, k),
        false,
    );
    dx
}

/// `linear`'s dw = dyᵀ·x alone.
pub fn linear_dw<T: Real>(dy: &[T], x: &[T], rows: usize, k: usize, n: usize) -> Vec<T> {
    let mut dw = vec![T::zero(); n * k];
    matmul(
        &mut dw,
        Mat::transposed(dy, n),
        Mat::rows(x, k),
        (n, rows, k),
        false,
    );
    dw
}

/// RoPE is a rotation per pair: its transpose rotates back (positions restart every `seq` rows).
pub fn rope<T: Real>(dy: &[T], width: usize, head_dim: usize, theta: f64, seq: usize) -> Vec<T> {
    kernels::rope(dy, width, head_dim, theta, true, seq)
}

/// `attention`'s rule over packed sequences of `s.rows` rows each (see
/// `kernels::attention_packed`): each sequence's gradients depend only on that sequence.
pub fn attention_packed<T: Real>(
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: AttnShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    use rayon::prelude::*;
    let (qw, kw, n) = (s.q_width(), s.kv_width(), s.rows);
    if n == 0 || q.len() == n * qw {
        return attention(dout, q, k, v, s);
    }
    let seqs = q.len() / (n * qw);
    let parts: Vec<_> = (0..seqs)
        .into_par_iter()
        .map(|b| {
            let (qr, kr) = (b * n * qw..(b + 1) * n * qw, b * n * kw..(b + 1) * n * kw);
            attention(&dout[qr.clone()], &q[qr], &k[kr.clone()], &v[kr], s)
        })
        .collect();
    let (mut dq, mut dk, mut dv) = (vec![], vec![], vec![]);
    for (a, b, c) in parts {
        dq.extend(a);
        dk.extend(b);
        dv.extend(c);
    }
    (dq, dk, dv)
}

/// Attention, per head with P recomputed: dv = Pᵀ·do, dP = do·vᵀ,
/// dS = P⊙(dP - rowsum(dP⊙P)), dq = dS·k·scale, dk = dSᵀ·q·scale. Heads sharing a key/value head
/// add their dk and dv.
pub fn attention<T: Real>(
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: AttnShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (d, n, qw, kw) = (s.head_dim, s.rows, s.q_width(), s.kv_width());
    let scale = T::one() / c::<T>(d as f64).sqrt();
    let mut dq = vec![T::zero(); q.len()];
    let mut dk = vec![T::zero(); k.len()];
    let mut dv = vec![T::zero(); v.len()];
    for h in 0..s.heads {
        let (qo, ko) = (h * d, s.kv_offset(h));
        let p = kernels::attention_probs(q, k, s, h);
        let do_h = Mat {
            data: &dout[qo..],
            row_stride: qw,
            col_stride: 1,
        };
        // dv[:, head] += Pᵀ·do
        let mut dv_h = vec![T::zero(); n * d];
        matmul(&mut dv_h, Mat::transposed(&p, n), do_h, (n, n, d), false);
        // dP = do·vᵀ, then the softmax backward in place.
        let mut ds = vec![T::zero(); n * n];
        matmul(
            &mut ds,
            do_h,
            Mat {
                data: &v[ko..],
                row_stride: 1,
                col_stride: kw,
            },
            (n, d, n),
            false,
        );
        for (row_p, row_d) in p.chunks(n).zip(ds.chunks_mut(n)) {
            let dot: T = row_p.iter().zip(row_d.iter()).map(|(&a, &b)| a * b).sum();
            for (dd, &pp) in row_d.iter_mut().zip(row_p) {
                *dd = pp * (*dd - dot) * scale;
            }
        }
        let mut dq_h = vec![T::zero(); n * d];
        matmul(
            &mut dq_h,
            Mat::rows(&ds, n),
            Mat {
                data: &k[ko..],
                row_stride: kw,
                col_stride: 1,
            },
            (n, n, d),
            false,
        );
        let mut dk_h = vec![T::zero(); n * d];
        matmul(
            &mut dk_h,
            Mat::transposed(&ds, n),
            Mat {
                data: &q[qo..],
                row_stride: qw,
                col_stride: 1,
            },
            (n, n, d),
            false,
        );
        scatter_add(&mut dq, &dq_h, qw, qo, d);
        scatter_add(&mut dk, &dk_h, kw, ko, d);
        scatter_add(&mut dv, &dv_h, kw, ko, d);
    }
    (dq, dk, dv)
}

/// Adds a `[rows, d]` block into columns `off..off+d` of a `[rows, width]` matrix.
fn scatter_add<T: Real>(dst: &mut [T], block: &[T], width: usize, off: usize, d: usize) {
    for (r, src) in block.chunks(d).enumerate() {
        for (o, &b) in dst[r * width + off..r * width + off + d]
            .iter_mut()
            .zip(src)
        {
            *o += b;
        }
    }
}

/// SiLU: d/dx x·σ(x) = σ(x)·(1 + x·(1 - σ(x))).
pub fn silu<T: Real>(dy: &[T], x: &[T]) -> Vec<T> {
    kernels::zip_map(dy, x, |g, v| {
        let s = sigmoid(v);
        g * s * (T::one() + v * (T::one() - s))
    })
}

/// Log-softmax from its output y: dx = dy - exp(y)·Σdy per row.
pub fn log_softmax<T: Real>(dy: &[T], y: &[T], n: usize) -> Vec<T> {
    let mut dx = dy.to_vec();
    for_rows(&mut dx, n, |r, row| {
        // The sum in f64 (a row is a whole vocabulary), the exponential the kernels' own.
        let sum: T = c(kernels::sum_f64(row, row, |v, _| v));
        for (d, &yi) in row.iter_mut().zip(&y[r * n..(r + 1) * n]) {
            *d = *d - yi.exp_fast() * sum;
        }
    });
    dx
}

/// Mean NLL: each row's target entry gets -dloss / rows.
pub fn cross_entropy<T: Real>(dloss: T, targets: &[i32], n: usize) -> Vec<T> {
    let mut d = vec![T::zero(); targets.len() * n];
    let g = -dloss / c(targets.len().max(1) as f64);
    for (r, &t) in targets.iter().enumerate() {
        d[r * n + t as usize] = g;
    }
    d
}

/// `Op::Distill`'s rule for the student's log-probabilities: d/dlogp(v) =
/// -((1-ce)·p_t(v) + ce·[v = target]) · dloss / rows.
pub fn distill<T: Real>(dloss: T, teacher: &[T], targets: &[i32], n: usize, ce: f64) -> Vec<T> {
    let rows = targets.len();
    let g = -dloss / c(rows.max(1) as f64);
    let soft: T = c(1.0 - ce);
    let hard: T = c(ce);
    let mut d = kernels::zip_map(teacher, teacher, |lt, _| g * soft * lt.exp_fast());
    for (r, &t) in targets.iter().enumerate() {
        d[r * n + t as usize] += g * hard;
    }
    d
}

/// `Op::Mse`'s rule: dx = 2·w[c]·(x - y)·dloss / numel, dy = -dx.
pub fn mse<T: Real>(dloss: T, x: &[T], y: &[T], w: &[T]) -> (Vec<T>, Vec<T>) {
    let k = c::<T>(2.0) * dloss / c(x.len().max(1) as f64);
    let ch = w.len().max(1);
    let dx: Vec<T> = x
        .iter()
        .zip(y)
        .enumerate()
        .map(|(i, (&a, &b))| k * w[i % ch] * (a - b))
        .collect();
    let dy = dx.iter().map(|&v| -v).collect();
    (dx, dy)
}
