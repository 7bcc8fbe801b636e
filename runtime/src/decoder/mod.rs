//! The decoder: prefill and decode with a KV cache. Tokens go through the layers as a batch
//! `[T, hidden]`; the new keys and values are appended to the cache and each token attends to
//! every cached position up to its own. The arithmetic follows Hugging Face LLaMA's order of
//! operations (as the interpreter does), so artifacts match the interpreter.

use crate::error::ArtifactError;
use crate::kernels::{linear_from, ops, HeadAttention, Kernels, LinearInput};
use crate::model::{Layer, Model};
use rayon::prelude::*;

mod team;

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
        let (cos, sin) = ops::rope_tables(&self.inv_freq, self.pos, t);
        let eps = c.rms_norm_eps as f32;
        let mut hn = vec![0.0; t * h];
        let first_norm = match self.model.layers.first() {
            Some(layer) => &layer.input_norm,
            None => &self.model.norm,
        };
        self.kernels.rms_norm(&x, first_norm, eps, &mut hn);
        if t == 1 && self.team_size() > 1 {
            if let Some(logits) = self.decode_team(&x, &hn) {
                return Ok(logits);
            }
        }
        for l in 0..c.num_hidden_layers {
            let next_norm = match self.model.layers.get(l + 1) {
                Some(next) => &next.input_norm,
                None => &self.model.norm,
            };
            self.block(l, &mut x, &mut hn, &cos, &sin, next_norm);
        }
        let rows = if all_logits { t } else { 1 };
        let normed = &hn[(t - rows) * h..];
        let mut logits = vec![0.0; rows * c.vocab_size];
        match &self.model.lm_head {
            // The artifact's activations (an 8-bit head has only the f32 kernel, `linear_from`).
            Some(m) => {
                let input = LinearInput::new(normed, rows, self.model.activations);
                linear_from(self.kernels, m, &input, &mut logits)
            }
            None => tied_head(&self.model.embed, h, normed, rows, &mut logits),
        }
        self.pos += t;
        Ok(logits)
    }

    /// One decoder layer on the `t` rows of `x` (the residual stream), given `hn` = its input
    /// norm of `x`; leaves `hn` = `next_norm` of the new `x` (the next layer's input norm, or the
    /// final norm), fused with the last residual add.
    fn block(
        &mut self,
        l: usize,
        x: &mut [f32],
        hn: &mut [f32],
        cos: &[f32],
        sin: &[f32],
        next_norm: &[f32],
    ) {
        let c = &self.model.config;
        let layer: &Layer = &self.model.layers[l];
        let (k, act) = (self.kernels, self.model.activations);
        let (d, eps) = (c.head_dim, c.rms_norm_eps as f32);
        let t = x.len() / c.hidden_size;
        let (qw, kvw) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let mut q = vec![0.0; t * qw];
        let mut kk = vec![0.0; t * kvw];
        let mut vv = vec![0.0; t * kvw];
        let input = LinearInput::new(hn, t, act);
        linear_from(k, &layer.q, &input, &mut q);
        linear_from(k, &layer.k, &input, &mut kk);
        linear_from(k, &layer.v, &input, &mut vv);
        k.rope(&mut q, qw, d, cos, sin);
        k.rope(&mut kk, kvw, d, cos, sin);
        let at = self.pos * kvw;
        self.keys[l][at..at + t * kvw].copy_from_slice(&kk);
        self.values[l][at..at + t * kvw].copy_from_slice(&vv);
        let attn = self.attention(l, &q, t);
        let mut o = vec![0.0; t * c.hidden_size];
        linear_from(k, &layer.o, &LinearInput::new(&attn, t, act), &mut o);
        k.add_rms_norm(x, &o, &layer.post_attention_norm, eps, hn);
        let inter = c.intermediate_size;
        let mut gate = vec![0.0; t * inter];
        let mut up = vec![0.0; t * inter];
        let input = LinearInput::new(hn, t, act);
        linear_from(k, &layer.gate, &input, &mut gate);
        linear_from(k, &layer.up, &input, &mut up);
        k.silu_mul(&mut gate, &up, inter);
        let mut down = vec![0.0; t * c.hidden_size];
        linear_from(k, &layer.down, &LinearInput::new(&gate, t, act), &mut down);
        if let Some(kept) = &layer.down_kept {
            for (xt, yt) in gate
                .chunks_exact(inter)
                .zip(down.chunks_exact_mut(c.hidden_size))
            {
                kept.add(xt, yt, 0);
            }
        }
        k.add_rms_norm(x, &down, next_norm, eps, hn);
    }

    /// Causal attention of `t` new queries over the cache of layer `l`; heads in parallel.
    fn attention(&self, l: usize, q: &[f32], t: usize) -> Vec<f32> {
        let c = &self.model.config;
        let (d, heads, kvh) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let (qw, kvw, group) = (heads * d, kvh * d, heads / kvh);
        let min_heads = if t * (self.pos + t) < ATTENTION_SPLIT {
            heads
        } else {
            1
        };
        let per_head: Vec<Vec<f32>> = (0..heads)
            .into_par_iter()
            .with_min_len(min_heads)
            .map(|hd| {
                let mut out = vec![0.0; t * d];
                let mut scores = vec![0.0; self.pos + t];
                for (i, oi) in out.chunks_exact_mut(d).enumerate() {
                    let head = HeadAttention {
                        q: &q[i * qw + hd * d..][..d],
                        keys: &self.keys[l],
                        values: &self.values[l],
                        kv_width: kvw,
                        kv_offset: (hd / group) * d,
                        visible: self.pos + i + 1,
                    };
                    self.kernels.attend(&head, &mut scores, oi);
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

/// Query-position pairs below which one call's attention runs on one thread (its heads are too
/// little work to hand out). Decode splits its heads from 64 cached positions on: on the 2-vCPU
/// Zen 3 machine, 2-bit SmolLM2 decode after a 128-token prompt at 2 threads went from 159-167 to
/// 177-189 tokens/s against a limit of 4096 (`paretoqc bench --tables end-to-end --bits 2
/// --configs int8:int8 --rounds 3`, two alternating runs each); from an empty context it did not
/// change (194-222 against 187-219).
const ATTENTION_SPLIT: usize = 64;
