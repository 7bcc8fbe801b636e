//! The decoder layer's non-matmul ops in plain Rust: the reference the MLIR-generated versions
//! (roles `rms_norm.N`, `add_rms_norm.N`, `rope.WxD`, `silu_mul.N`, `attention.DxKVW`) follow
//! and are tested against, and the fallback of the `portable` target. The arithmetic follows
//! Hugging Face LLaMA's order of operations, as the interpreter does.

/// `out[r] = w * (x[r] * rsqrt(mean(x[r]²) + eps))` for every row of `x` (rows of `w.len()`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        normalise(row, w, eps, o);
    }
}

/// The residual add and the RMSNorm that reads it: `x += y`, then `out = rms_norm(x)`.
pub fn add_rms_norm(x: &mut [f32], y: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    rms_norm(x, w, eps, out);
}

fn normalise(row: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
        *o = wi * (v * inv);
    }
}

/// Rotate-half RoPE in place on rows of `width` (heads of `head_dim`); row `i` uses
/// `cos[i * head_dim/2 ..]` and `sin[..]` (the row's position's table).
pub fn rope(x: &mut [f32], width: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (i, row) in x.chunks_exact_mut(width).enumerate() {
        let (c, s) = (
            &cos[i * half..(i + 1) * half],
            &sin[i * half..(i + 1) * half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            for j in 0..half {
                let (a, b) = (head[j], head[j + half]);
                head[j] = a * c[j] - b * s[j];
                head[j + half] = b * c[j] + a * s[j];
            }
        }
    }
}

/// `cos` and `sin` tables of positions `first..first + count`, `inv_freq.len()` entries each.
pub fn rope_tables(inv_freq: &[f32], first: usize, count: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(count * inv_freq.len());
    let mut sin = Vec::with_capacity(count * inv_freq.len());
    for p in first..first + count {
        for &f in inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// The SiLU gate in place: `g = silu(g) * u`.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// One query head against its key/value head in the cache.
pub struct HeadAttention<'a> {
    /// The head's query (`head_dim` values).
    pub q: &'a [f32],
    /// The layer's caches, rows of `kv_width`.
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub kv_width: usize,
    /// Where the key/value head starts in a cache row.
    pub kv_offset: usize,
    /// Cached positions the query sees (its own included).
    pub visible: usize,
}

/// `out = softmax(q·Kᵀ / sqrt(d)) V` over the visible positions; `scores` holds at least
/// `visible` values of scratch.
pub fn attend(a: &HeadAttention, scores: &mut [f32], out: &mut [f32]) {
    let d = a.q.len();
    let scale = 1.0 / (d as f32).sqrt();
    let scores = &mut scores[..a.visible];
    for (j, s) in scores.iter_mut().enumerate() {
        let k = &a.keys[j * a.kv_width + a.kv_offset..][..d];
        *s = a.q.iter().zip(k).map(|(x, y)| x * y).sum::<f32>() * scale;
    }
    softmax(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        let v = &a.values[j * a.kv_width + a.kv_offset..][..d];
        for (o, &vi) in out.iter_mut().zip(v) {
            *o += p * vi;
        }
    }
}

fn softmax(x: &mut [f32]) {
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
