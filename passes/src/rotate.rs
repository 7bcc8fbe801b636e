//! Rotation of the residual stream: the same model, expressed in a randomly rotated basis of
//! the hidden dimension, whose projection weights quantize with less error.
//!
//! A LLaMA residual stream has a few channels with values far larger than the rest, and the
//! projections that read it have matching large columns; with one scale per row, those columns
//! decide each row's scale and the other weights of the row fall on the few smallest levels.
//! Multiplying the stream by a random orthogonal Q spreads every channel over all of them
//! (QuaRot and SpinQuant do this for low-bit inference; QuIP# calls it incoherence processing).
//!
//! With x' = x·Q for the stream entering and leaving every layer:
//! - RMSNorm commutes with Q once its weight γ is folded into the projections that read it:
//!   `rms(x')` = `rms(x)·Q`, and `(rms(x)⊙γ)·Wᵀ` = `rms(x')·(W·diag(γ)·Q)ᵀ`, so q, k, v (after
//!   `input_layernorm`), gate and up (after `post_attention_layernorm`) become `W·diag(γ)·Q`
//!   and each γ becomes 1;
//! - o_proj and down_proj write into the stream: they become `Qᵀ·W`;
//! - the embedding becomes `E·Q`; the output head `H·diag(γ_final)·Q`. A tied head then no
//!   longer equals the embedding, so the model is untied (one more vocab x hidden matrix).
//!
//! The rotated model computes the same logits up to float rounding (tested to 1e-4).

use crate::import::llama::{build_graph, PROJECTIONS};
use crate::import::{LlamaConfig, Model, Weights};
use crate::interp::kernels::{matmul, Mat};
use crate::tensor::Tensor;

/// A random orthogonal n x n matrix (row-major): Householder QR of a seeded Gaussian matrix,
/// with the signs fixed so that the result is uniformly distributed.
pub fn random_orthogonal(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    // Box-Muller.
    let mut a: Vec<f64> = (0..n * n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect();
    // Householder QR, column by column; q accumulates the reflections.
    let mut q = vec![0.0f64; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let mut diag_sign = vec![1.0f64; n];
    for k in 0..n {
        let norm: f64 = (k..n)
            .map(|i| a[i * n + k] * a[i * n + k])
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a[k * n + k] > 0.0 { -norm } else { norm };
        diag_sign[k] = alpha.signum();
        let mut v: Vec<f64> = (k..n).map(|i| a[i * n + k]).collect();
        v[0] -= alpha;
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        // a <- (I - 2vvᵀ/|v|²)·a on rows k.., columns k..
        for j in k..n {
            let dot: f64 = (k..n).map(|i| v[i - k] * a[i * n + j]).sum();
            let f = 2.0 * dot / vnorm2;
            for i in k..n {
                a[i * n + j] -= f * v[i - k];
            }
        }
        // q <- q·(I - 2vvᵀ/|v|²) on columns k..
        for r in 0..n {
            let dot: f64 = (k..n).map(|i| q[r * n + i] * v[i - k]).sum();
            let f = 2.0 * dot / vnorm2;
            for i in k..n {
                q[r * n + i] -= f * v[i - k];
            }
        }
    }
    // Q·diag(sign(R_kk)) makes the factorization unique and Q Haar-distributed.
    for r in 0..n {
        for c in 0..n {
            q[r * n + c] *= diag_sign[c];
        }
    }
    q.into_iter().map(|v| v as f32).collect()
}

/// `a[rows, n]·q[n, n]`.
fn times(a: &[f32], q: &[f32], n: usize) -> Vec<f32> {
    let rows = a.len() / n.max(1);
    let mut out = vec![0.0f32; a.len()];
    matmul(
        &mut out,
        Mat::rows(a, n),
        Mat::rows(q, n),
        (rows, n, n),
        false,
    );
    out
}

/// `qᵀ[n, n]·w[n, cols]`.
fn transposed_times(q: &[f32], w: &[f32], n: usize) -> Vec<f32> {
    let cols = w.len() / n.max(1);
    let mut out = vec![0.0f32; w.len()];
    matmul(
        &mut out,
        Mat::transposed(q, n),
        Mat::rows(w, cols),
        (n, n, cols),
        false,
    );
    out
}

fn take(w: &mut Weights, name: &str) -> Result<Tensor, String> {
    w.remove(name)
        .ok_or_else(|| format!("rotate: the model has no weight {name}"))
}

/// Scales column j of a [rows, n] matrix by g[j].
fn scale_columns(w: &mut Tensor, g: &[f32]) {
    for row in w.data.chunks_mut(g.len()) {
        for (v, &s) in row.iter_mut().zip(g) {
            *v *= s;
        }
    }
}

/// Rotates the residual stream of a full-precision model (its weights must not be lowered for
/// QAT yet) by a random orthogonal matrix of `seed`; the config is untied and the graph rebuilt.
pub fn rotate_residual(m: &mut Model, seed: u64) -> Result<(), String> {
    let cfg: LlamaConfig = m.config.clone();
    let h = cfg.hidden_size;
    let q = random_orthogonal(h, seed);
    let w = &mut m.weights;
    if w.keys().any(|k| k.ends_with("weight_clip_val")) {
        return Err("rotate: the model already has ParetoQ scales; rotate before QAT".into());
    }
    let ones = Tensor::new(vec![h], vec![1.0; h]);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (norm, readers) in [
            ("input_layernorm", &PROJECTIONS[..3]),
            ("post_attention_layernorm", &PROJECTIONS[4..6]),
        ] {
            let g = take(w, &format!("{p}.{norm}.weight"))?;
            for proj in readers {
                let name = format!("{p}.{proj}.weight");
                let mut t = take(w, &name)?;
                scale_columns(&mut t, &g.data);
                t.data = times(&t.data, &q, h);
                w.insert(name, t);
            }
            w.insert(format!("{p}.{norm}.weight"), ones.clone());
        }
        for proj in ["self_attn.o_proj", "mlp.down_proj"] {
            let name = format!("{p}.{proj}.weight");
            let mut t = take(w, &name)?;
            t.data = transposed_times(&q, &t.data, h);
            w.insert(name, t);
        }
    }
    let embed = take(w, "model.embed_tokens.weight")?;
    let mut head = if cfg.tie_word_embeddings {
        embed.clone()
    } else {
        take(w, "lm_head.weight")?
    };
    let g = take(w, "model.norm.weight")?;
    scale_columns(&mut head, &g.data);
    head.data = times(&head.data, &q, h);
    w.insert("lm_head.weight".into(), head);
    w.insert(
        "model.embed_tokens.weight".into(),
        Tensor::new(embed.shape.clone(), times(&embed.data, &q, h)),
    );
    w.insert("model.norm.weight".into(), ones);
    m.config.tie_word_embeddings = false;
    m.graph = build_graph(&m.config, &m.graph.name.clone())?;
    Ok(())
}
