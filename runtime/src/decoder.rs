//! The decoder: prefill and decode with a KV cache. Tokens go through the layers as a batch
//! `[T, hidden]`; the new keys and values are appended to the cache and each token attends to
//! every cached position up to its own. The arithmetic follows Hugging Face LLaMA's order of
//! operations (as the interpreter does), so artifacts match the interpreter.

use crate::error::ArtifactError;
use crate::kernels::{linear, linear_with, Kernels};
use crate::model::{Layer, Model};
use rayon::prelude::*;

pub struct Session<'a> {
    model: &'a Model,
    kernels: &'a dyn Kernels,
    /// Per layer: [capacity, kv_heads * head_dim] keys and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    capacity: usize,
    /// Tokens in the cache.
    pub pos: usize,
    inv_freq: Vec<f32>,
}

impl<'a> Session<'a> {
    /// A session that can hold `capacity` tokens (prompt and generated).
    pub fn new(model: &'a Model, kernels: &'a dyn Kernels, capacity: usize) -> Session<'a> {
        let c = &model.config;
        let kvw = c.num_key_value_heads * c.head_dim;
        let d = c.head_dim;
        let inv_freq = (0..d / 2)
            .map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / d as f32))
            .collect();
        Session {
            model,
            kernels,
            keys: vec![vec![0.0; capacity * kvw]; c.num_hidden_layers],
            values: vec![vec![0.0; capacity * kvw]; c.num_hidden_layers],
            capacity,
            pos: 0,
            inv_freq,
        }
    }

    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Runs `tokens` after what the cache holds; returns the logits of every token
    /// (`all_logits`) or of the last one, row-major [rows, vocab].
    pub fn forward(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>, ArtifactError> {
        let c = &self.model.config;
        let t = tokens.len();
        if self.pos + t > self.capacity {
            return Err(ArtifactError::Run(format!(
                "{} tokens do not fit the context of {} ({} already used)",
                t, self.capacity, self.pos
            )));
        }
        let h = c.hidden_size;
        let mut x = Vec::with_capacity(t * h);
        for &id in tokens {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(ArtifactError::Run(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            self.model.embed_row(id, &mut x);
        }
        for l in 0..c.num_hidden_layers {
            self.block(l, &mut x, t);
        }
        let rows = if all_logits { t } else { 1 };
        let last = &x[(t - rows) * h..];
        let normed = rms_norm(last, &self.model.norm, c.rms_norm_eps);
        let mut logits = vec![0.0; rows * c.vocab_size];
        match &self.model.lm_head {
            Some(m) => linear(self.kernels, m, &normed, rows, &mut logits),
            None => tied_head(&self.model.embed, h, &normed, rows, &mut logits),
        }
        self.pos += t;
        Ok(logits)
    }

    fn block(&mut self, l: usize, x: &mut [f32], t: usize) {
        let c = &self.model.config;
        let layer: &Layer = &self.model.layers[l];
        let k = self.kernels;
        let (qw, kvw) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let hn = rms_norm(x, &layer.input_norm, c.rms_norm_eps);
        let mut q = vec![0.0; t * qw];
        let mut kk = vec![0.0; t * kvw];
        let mut vv = vec![0.0; t * kvw];
        linear_with(k, &layer.q, &hn, t, &mut q, self.model.activations);
        linear_with(k, &layer.k, &hn, t, &mut kk, self.model.activations);
        linear_with(k, &layer.v, &hn, t, &mut vv, self.model.activations);
        self.rope(&mut q, qw);
        self.rope(&mut kk, kvw);
        let at = self.pos * kvw;
        self.keys[l][at..at + t * kvw].copy_from_slice(&kk);
        self.values[l][at..at + t * kvw].copy_from_slice(&vv);
        let attn = self.attention(l, &q, t);
        let mut o = vec![0.0; t * c.hidden_size];
        linear_with(k, &layer.o, &attn, t, &mut o, self.model.activations);
        add_in_place(x, &o);
        let hn = rms_norm(x, &layer.post_attention_norm, c.rms_norm_eps);
        let inter = c.intermediate_size;
        let mut gate = vec![0.0; t * inter];
        let mut up = vec![0.0; t * inter];
        linear_with(k, &layer.gate, &hn, t, &mut gate, self.model.activations);
        linear_with(k, &layer.up, &hn, t, &mut up, self.model.activations);
        for (g, u) in gate.iter_mut().zip(&up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        let mut down = vec![0.0; t * c.hidden_size];
        linear_with(k, &layer.down, &gate, t, &mut down, self.model.activations);
        add_in_place(x, &down);
    }

    /// Rotate-half RoPE on rows of `width`; row i is position `pos + i`.
    fn rope(&self, x: &mut [f32], width: usize) {
        let d = self.model.config.head_dim;
        let half = d / 2;
        for (i, row) in x.chunks_mut(width).enumerate() {
            let p = (self.pos + i) as f32;
            let (cos, sin): (Vec<f32>, Vec<f32>) = self
                .inv_freq
                .iter()
                .map(|&f| ((p * f).cos(), (p * f).sin()))
                .unzip();
            for head in row.chunks_mut(d) {
                for j in 0..half {
                    let (a, b) = (head[j], head[j + half]);
                    head[j] = a * cos[j] - b * sin[j];
                    head[j + half] = b * cos[j] + a * sin[j];
                }
            }
        }
    }

    /// Causal attention of `t` new queries over the cache of layer `l`; heads in parallel.
    fn attention(&self, l: usize, q: &[f32], t: usize) -> Vec<f32> {
        let c = &self.model.config;
        let (d, heads, kvh) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let (qw, kvw, group) = (heads * d, kvh * d, heads / kvh);
        let scale = 1.0 / (d as f32).sqrt();
        let (keys, values) = (&self.keys[l], &self.values[l]);
        let per_head: Vec<Vec<f32>> = (0..heads)
            .into_par_iter()
            .map(|hd| {
                let kv = (hd / group) * d;
                let mut out = vec![0.0; t * d];
                let mut scores = Vec::with_capacity(self.pos + t);
                for i in 0..t {
                    let qi = &q[i * qw + hd * d..i * qw + (hd + 1) * d];
                    let visible = self.pos + i + 1;
                    scores.clear();
                    scores.extend((0..visible).map(|j| {
                        let kj = &keys[j * kvw + kv..j * kvw + kv + d];
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale
                    }));
                    softmax(&mut scores);
                    let oi = &mut out[i * d..(i + 1) * d];
                    for (j, &p) in scores.iter().enumerate() {
                        let vj = &values[j * kvw + kv..j * kvw + kv + d];
                        for (o, &v) in oi.iter_mut().zip(vj) {
                            *o += p * v;
                        }
                    }
                }
                out
            })
            .collect();
        let mut merged = vec![0.0; t * qw];
        for (hd, o) in per_head.iter().enumerate() {
            for i in 0..t {
                merged[i * qw + hd * d..i * qw + (hd + 1) * d]
                    .copy_from_slice(&o[i * d..(i + 1) * d]);
            }
        }
        merged
    }
}

/// The tied output projection: logits against the embedding table [vocab, h].
fn tied_head(table: &[f32], h: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    use crate::kernels::reference::{dense_gemm, dot};
    if rows > 1 {
        dense_gemm(table, table.len() / h, h, x, rows, out);
        return;
    }
    out.par_chunks_mut(256).enumerate().for_each(|(i, chunk)| {
        for (j, o) in chunk.iter_mut().enumerate() {
            let r = i * 256 + j;
            *o = dot(&table[r * h..(r + 1) * h], x);
        }
    });
}

/// `w * (x * rsqrt(mean(x²) + eps))` per row, in Hugging Face's order.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let n = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &wi)| wi * (v * inv)));
    }
    out
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

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
