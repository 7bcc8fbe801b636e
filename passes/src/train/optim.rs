//! AdamW with PyTorch's arithmetic and the Hugging Face Trainer's defaults (the ParetoQ recipe):
//! betas 0.9/0.999, eps 1e-8, decoupled weight decay 0, gradient-norm clip 1.0, and the cosine
//! schedule with optional linear warmup.

use crate::import::Weights;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        }
    }
}

/// Optimizer state: first and second moments per parameter, and the number of steps taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamW {
    pub m: Weights,
    pub v: Weights,
    pub step: u64,
}

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warmup, then cosine
/// decay to 0 (transformers' `get_cosine_schedule_with_warmup`).
pub fn cosine_lr(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0)
}

/// The global L2 norm of all gradients.
pub fn grad_norm(grads: &BTreeMap<String, Tensor>) -> f64 {
    // Per-tensor sums in a fixed order, so the result does not depend on the thread count.
    grads
        .values()
        .map(|t| {
            t.data
                .par_chunks(1 << 16)
                .map(sum_squares)
                .collect::<Vec<f64>>()
                .iter()
                .sum::<f64>()
        })
        .sum::<f64>()
        .sqrt()
}

/// Σ g² in f64, in eight interleaved partial sums (so the loop vectorises).
fn sum_squares(g: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let chunks = g.chunks_exact(LANES);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += (c[j] as f64) * (c[j] as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

impl AdamW {
    /// Clips the gradients to `max_grad_norm` (as torch's clip_grad_norm_), then takes one step
    /// on every parameter that has a gradient. Returns the norm before clipping.
    pub fn step(
        &mut self,
        params: &mut Weights,
        grads: &mut BTreeMap<String, Tensor>,
        lr: f64,
        cfg: &AdamWConfig,
    ) -> f64 {
        let norm = grad_norm(grads);
        // Clipping is applied inside the update (one pass over the gradients fewer).
        let clip = cfg.max_grad_norm / (norm + 1e-6);
        let clip = (clip < 1.0).then_some(clip);
        self.step += 1;
        let bc1 = 1.0 - cfg.beta1.powi(self.step as i32);
        let bc2 = 1.0 - cfg.beta2.powi(self.step as i32);
        for (name, g) in grads.iter() {
            let Some(p) = params.get_mut(name) else {
                continue;
            };
            let m = self
                .m
                .entry(name.clone())
                .or_insert_with(|| Tensor::zeros(p.shape.clone()));
            let v = self
                .v
                .entry(name.clone())
                .or_insert_with(|| Tensor::zeros(p.shape.clone()));
            // Element-wise, so chunks run in parallel with the same result.
            const CHUNK: usize = 1 << 16;
            let h = Hyper {
                lr,
                bc1,
                bc2,
                cfg,
                clip,
            };
            p.data
                .par_chunks_mut(CHUNK)
                .zip(m.data.par_chunks_mut(CHUNK))
                .zip(v.data.par_chunks_mut(CHUNK))
                .zip(g.data.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| update(p, m, v, g, &h));
        }
        norm
    }
}

struct Hyper<'a> {
    lr: f64,
    bc1: f64,
    bc2: f64,
    cfg: &'a AdamWConfig,
    /// The factor of torch's clip_grad_norm_, when it clips.
    clip: Option<f64>,
}

/// One parameter tensor's update, in PyTorch's order: clip, decay, moments,
/// p -= lr/bc1 · m / (√v/√bc2 + eps).
fn update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &Hyper) {
    let (b1, b2) = (h.cfg.beta1 as f32, h.cfg.beta2 as f32);
    let decay = (1.0 - h.lr * h.cfg.weight_decay) as f32;
    let step_size = (h.lr / h.bc1) as f32;
    let sqrt_bc2 = h.bc2.sqrt() as f32;
    let eps = h.cfg.eps as f32;
    let one = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
        *p *= decay;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / sqrt_bc2 + eps;
        *p -= step_size * *m / denom;
    };
    // Zipped slices, so the loops have no bounds checks and vectorise; one copy with clipping
    // (torch scales the gradient in f64 and rounds it back) and one without.
    let elems = p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
    match h.clip {
        Some(clip) => elems.for_each(|(((p, m), v), &g)| one(p, m, v, (g as f64 * clip) as f32)),
        None => elems.for_each(|(((p, m), v), &g)| one(p, m, v, g)),
    }
}
